"""Strict loading of the backbone from the official-layout (tiny) checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from workers.model.backbone import load_backbone
from workers.model.backbone.rope import inverse_frequencies
from workers.model.config import BackboneConfig, ConfigError
from workers.model.tiny_checkpoint import make_tiny_checkpoint
from workers.model.weights import CheckpointError

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def backbone_only(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("backbone-only"), seed=1, with_image_components=False)


@pytest.fixture
def editable(backbone_only, tmp_path) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(backbone_only, folder)
    return folder


def rewrite_shards(folder: Path, edit) -> None:
    """Load every shard, let `edit(shard_name, tensors)` change it, write shards and index back."""
    index = json.loads((folder / INDEX).read_text())
    weight_map = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors = load_file(folder / shard)
        edit(shard, tensors)
        save_file(tensors, str(folder / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in tensors})
    index["weight_map"] = weight_map
    (folder / INDEX).write_text(json.dumps(index))


def test_loads_every_tensor_from_the_files(tiny_ckpt):
    model = load_backbone(tiny_ckpt)
    state = model.state_dict()
    index = json.loads((tiny_ckpt / INDEX).read_text())
    assert set(state) == set(index["weight_map"])  # every file tensor is a module tensor and vice versa
    names = ("lm_head.weight", "model.layers.2.mlp.experts.31.down_proj.weight", "model.layers.1.mlp.gate.expert_bias")
    for name in names:
        with safe_open(tiny_ckpt / index["weight_map"][name], framework="pt") as f:
            assert torch.equal(state[name], f.get_tensor(name).float())


def test_nothing_left_on_meta_and_rotary_frequencies_computed(tiny_ckpt):
    model = load_backbone(tiny_ckpt)
    tensors = [*model.named_parameters(), *model.named_buffers()]
    assert not [n for n, t in tensors if t.is_meta]
    cfg = model.config
    assert cfg.rotary_dim == cfg.head_dim // 2
    assert torch.allclose(model.model.rotary_emb.inv_freq, inverse_frequencies(cfg.rotary_dim, cfg.rope_theta))
    assert "model.rotary_emb.inv_freq" not in model.state_dict()  # non-persistent: never expected in files


def test_expert_bias_stays_fp32_in_a_bf16_model(tiny_ckpt):
    model = load_backbone(tiny_ckpt, dtype=torch.bfloat16)
    biases = {n: t for n, t in model.named_buffers() if n.endswith("expert_bias")}
    assert len(biases) == model.config.num_hidden_layers - model.config.first_k_dense_replace
    assert all(t.dtype == torch.float32 for t in biases.values())
    others = {t.dtype for n, t in model.named_parameters()}
    assert others == {torch.bfloat16}


def test_bf16_forward_tracks_fp32(tiny_ckpt):
    fp32, bf16 = load_backbone(tiny_ckpt), load_backbone(tiny_ckpt, dtype=torch.bfloat16)
    ids = torch.arange(40).remainder(fp32.config.vocab_size)[None]
    pos = torch.arange(40)[None]
    a, b = fp32(ids, pos).logits, bf16(ids, pos).logits
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def test_default_dtype_is_fp32_on_cpu(tiny_ckpt):
    assert load_backbone(tiny_ckpt, device="cpu").lm_head.weight.dtype == torch.float32


def test_single_file_checkpoint_without_index_loads(editable):
    merged = {}
    for shard in sorted(editable.glob("model-*.safetensors")):
        merged.update(load_file(shard))
        shard.unlink()
    (editable / INDEX).unlink()
    save_file(merged, str(editable / "model.safetensors"))
    assert load_backbone(editable).config.num_hidden_layers == 3


def test_missing_key_is_listed(editable):
    rewrite_shards(editable, lambda shard, t: t.pop("model.layers.2.mlp.experts.7.up_proj.weight", None))
    with pytest.raises(CheckpointError) as err:
        load_backbone(editable)
    assert "backbone" in str(err.value) and "missing (1)" in str(err.value)
    assert "model.layers.2.mlp.experts.7.up_proj.weight" in str(err.value)


def test_unexpected_keys_are_listed(editable):
    def add(shard, tensors):
        if "lm_head.weight" in tensors:
            tensors["model.rotary_emb.inv_freq"] = torch.ones(4)
            tensors["model.layers.0.mlp.gate.expert_bias"] = torch.zeros(32)  # layer 0 is dense

    rewrite_shards(editable, add)
    with pytest.raises(CheckpointError) as err:
        load_backbone(editable)
    message = str(err.value)
    assert "unexpected (2)" in message
    assert "model.rotary_emb.inv_freq" in message and "model.layers.0.mlp.gate.expert_bias" in message


def test_misshaped_key_is_listed(editable):
    def transpose(shard, tensors):
        name = "model.layers.1.attention.query_key_value.weight"
        if name in tensors:
            tensors[name] = tensors[name].t().contiguous()

    rewrite_shards(editable, transpose)
    with pytest.raises(CheckpointError) as err:
        load_backbone(editable)
    assert "mis-shaped (1)" in str(err.value)
    assert "model.layers.1.attention.query_key_value.weight file [64, 96] vs model [96, 64]" in str(err.value)


def test_config_errors_name_the_field(backbone_only, tmp_path):
    data = json.loads((backbone_only / "config.json").read_text())
    bad = dict(data, num_key_value_heads=3)
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        BackboneConfig.from_dict(bad)
    missing = {k: v for k, v in data.items() if k != "moe_intermediate_size"}
    with pytest.raises(ConfigError, match="moe_intermediate_size"):
        BackboneConfig.from_dict(missing)
    clash = dict(data, rope_theta=10000)
    with pytest.raises(ConfigError, match="rope_theta"):
        BackboneConfig.from_dict(clash)
    with pytest.raises(ConfigError, match="config.json"):
        BackboneConfig.from_file(tmp_path / "config.json")


def test_config_reads_the_official_values():
    official = {  # docs/model.md §2.1, the fields that matter
        "vocab_size": 173568, "hidden_size": 2048, "intermediate_size": 5120, "num_hidden_layers": 20,
        "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 128, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 8192, "rope_theta": 600000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 600000, "partial_rotary_factor": 0.5},
        "partial_rotary_factor": 0.5, "pad_token_id": 156892, "num_experts": 256, "num_shared_experts": 1,
        "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5,
        "moe_intermediate_size": 512, "first_k_dense_replace": 1, "image_token_offset": 157184,
        "auto_map": {"AutoConfig": "x"}, "use_cache": False, "sliding_window": None,
    }
    cfg = BackboneConfig.from_dict(official)
    assert (cfg.rotary_dim, cfg.qkv_width, cfg.num_query_groups, cfg.codebook_size) == (64, 3072, 4, 16384)
    assert cfg.raw["auto_map"] == {"AutoConfig": "x"} and cfg.is_moe_layer(1) and not cfg.is_moe_layer(0)


def test_optional_biases_and_qk_norm_follow_the_config(backbone_only):
    from workers.model.backbone import LLaDA2MoeModelLM

    data = json.loads((backbone_only / "config.json").read_text())
    with torch.device("meta"):
        plain = LLaDA2MoeModelLM(BackboneConfig.from_dict(data)).state_dict()
        varied = LLaDA2MoeModelLM(BackboneConfig.from_dict(dict(data, use_qkv_bias=True, use_bias=True,
                                                                 use_qk_norm=False))).state_dict()
    assert "model.layers.0.attention.query_key_value.bias" not in plain
    assert "model.layers.0.attention.query_key_value.bias" in varied and "model.layers.0.attention.dense.bias" in varied
    assert "model.layers.0.attention.query_layernorm.weight" not in varied
