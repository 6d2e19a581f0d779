"""The tiny checkpoint is a structural copy of the official one (docs/model.md §10)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from workers.model import tiny_checkpoint
from workers.model.tiny_checkpoint import main, make_tiny_checkpoint

# docs/model.md §2.1: every field of the official config.json.
OFFICIAL_FIELDS = {
    "architectures", "auto_map", "model_type", "torch_dtype", "vocab_size", "hidden_size", "intermediate_size",
    "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "use_qkv_bias",
    "use_qk_norm", "use_bias", "rms_norm_eps", "attention_dropout", "initializer_range",
    "max_position_embeddings", "rope_theta", "rope_parameters", "partial_rotary_factor", "use_cache",
    "sliding_window", "pad_token_id", "num_experts", "num_shared_experts", "num_experts_per_tok", "n_group",
    "topk_group", "routed_scaling_factor", "moe_intermediate_size", "first_k_dense_replace",
    "output_router_logits", "image_token_offset", "transformers_version",
}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_layout_and_config(tiny_ckpt):
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "model.safetensors.index.json"):
        assert (tiny_ckpt / name).is_file(), name
    config = json.loads((tiny_ckpt / "config.json").read_text())
    assert set(config) == OFFICIAL_FIELDS
    assert config["architectures"] == ["LLaDA2MoeModelLM"] and config["model_type"] == "llada2_moe"
    assert (config["image_token_offset"], config["vocab_size"]) == (384, 448)
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (4, 1, 16)
    assert config["pad_token_id"] != 156892


def test_shards_index_and_dtypes(tiny_ckpt):
    index = json.loads((tiny_ckpt / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    total, seen = 0, set()
    for shard in shards:
        with safe_open(tiny_ckpt / shard, framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                seen.add(key)
                assert index["weight_map"][key] == shard
                total += t.numel() * t.element_size()
                if key.endswith("mlp.gate.expert_bias"):
                    assert t.dtype == torch.float32 and (t != 0).all() and t.abs().max() > 0.05
                else:
                    assert t.dtype == torch.bfloat16, key
    assert seen == set(index["weight_map"])
    assert index["metadata"]["total_size"] == total
    assert "model.rotary_emb.inv_freq" not in seen
    assert "model.layers.2.mlp.experts.31.gate_proj.weight" in seen  # per-expert layout (§2.3)


def test_tokenizer_specials(tiny_ckpt):
    added = {t["content"]: t["id"] for t in json.loads((tiny_ckpt / "tokenizer.json").read_text())["added_tokens"]}
    for s in ("<|mask|>", "<|image|>", "<|/image|>", "<boi>", "<uncondition>", "<role>", "</role>", "<|role_end|>",
              tiny_checkpoint.EOS_TOKEN, "<|reserved_token_0|>", "<|reserved_token_64|>"):
        assert s in added and added[s] < 384
    assert len(set(added.values())) == len(added)


def test_image_components_are_written_when_available(tiny_ckpt):
    try:
        import workers.model.tiny_image_components  # noqa: F401
    except ModuleNotFoundError:
        pytest.skip("image components module not present")
    for sub in ("image_tokenizer", "decoder", "decoder-turbo", "vae"):
        assert (tiny_ckpt / sub / "config.json").is_file(), sub


def test_deterministic_for_a_seed(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "a", seed=5, with_image_components=False)
    b = make_tiny_checkpoint(tmp_path / "b", seed=5, with_image_components=False)
    c = make_tiny_checkpoint(tmp_path / "c", seed=6, with_image_components=False)
    assert digest(a) == digest(b)
    differs = {k for k in digest(a) if digest(a)[k] != digest(c)[k]}
    assert differs == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    assert sum(p.stat().st_size for p in a.iterdir()) < 5_000_000


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "OUT_DIR" in capsys.readouterr().out.upper()
    main([str(tmp_path / "cli"), "--seed", "2", "--backbone-only"])
    assert (tmp_path / "cli" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "cli" / "vae").exists()
