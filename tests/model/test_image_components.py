"""The tiny image components: official layout, key names, dtypes, config field sets, seeded and informative."""

import json

import pytest
import torch
from safetensors import safe_open

from workers.model.tiny_image_components import PREPROCESSOR_CONFIG, write_image_components

OFFICIAL_FILES = [
    "image_tokenizer/config.json",
    "image_tokenizer/preprocessor_config.json",
    "image_tokenizer/model.safetensors",
    "image_tokenizer/sigvq_embedding.pt",
    "decoder/config.json",
    "decoder/model.safetensors",
    "decoder-turbo/config.json",
    "decoder-turbo/model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def _tensors(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image-components")
    write_image_components(folder, seed=0)
    return folder


def test_official_files_and_preprocessor_config_unchanged(components):
    for name in OFFICIAL_FILES:
        assert (components / name).is_file(), name
    pre = json.loads((components / "image_tokenizer/preprocessor_config.json").read_text())
    assert pre == PREPROCESSOR_CONFIG
    assert pre["patch_size"] == 16 and pre["merge_size"] == 1 and pre["do_resize"] is False


def test_key_names_and_bf16(components):
    tok = _tensors(components / "image_tokenizer/model.safetensors")
    assert all(k.startswith(("model.visual.", "model.vqmodel.")) for k in tok)
    assert tok["model.visual.blocks.1.attn.qkv.weight"].shape == (3 * 48, 48)
    assert tok["model.visual.embeddings.position_embedding.weight"].shape == (32 * 32, 48)
    assert tok["model.vqmodel.quantize.embedding.weight"].shape == (64, 32)
    assert tok["model.vqmodel.post_quant_conv.weight"].shape == (48, 32, 1, 1)
    dit = _tensors(components / "decoder/model.safetensors")
    assert "semantic_embedder.1.weight" in dit and not any(k.startswith("cap_embedder") for k in dit)
    assert dit["semantic_embedder.1.weight"].shape == (384, 40)
    assert "all_x_embedder.2-1.weight" in dit and "layers.1.adaLN_modulation.0.weight" in dit
    vae = _tensors(components / "vae/diffusion_pytorch_model.safetensors")
    sigvq = torch.load(components / "image_tokenizer/sigvq_embedding.pt", weights_only=True)
    assert sigvq["prior_token_embedding.weight"].shape == (64, 40)
    assert sigvq["prior_projector.net.2.weight"].shape == (40, 40)
    for group in (tok, dit, vae, sigvq):
        assert {t.dtype for t in group.values()} == {torch.bfloat16}


def test_config_field_sets(components):
    dit = json.loads((components / "decoder/config.json").read_text())
    assert dit["_class_name"] == "ZImageTransformer2DModel" and dit["cap_feat_dim"] == 40
    assert dit["dim"] // dit["n_heads"] == 128 and dit["axes_lens"] == [32768, 1024, 1024]
    vae = json.loads((components / "vae/config.json").read_text())
    assert vae["scaling_factor"] == 0.3611 and vae["shift_factor"] == 0.1159 and vae["latent_channels"] == 16
    tok = json.loads((components / "image_tokenizer/config.json").read_text())
    assert set(tok) == {"vision_config", "vq_config"}
    assert tok["vq_config"]["latent_channels"] == tok["vision_config"]["hidden_size"]


def test_informative_weights(components):
    dit = _tensors(components / "decoder/model.safetensors")
    assert dit["x_pad_token"].float().abs().min() > 0 and dit["cap_pad_token"].float().abs().mean() > 0.1
    norm = dit["layers.0.attention_norm1.weight"].float()
    assert (norm - 1).abs().max() < 0.6 and norm.std() > 0.01
    proj = dit["layers.0.attention.to_q.weight"].float()
    assert 0.015 < proj.std() < 0.025


def test_seeded_and_decoders_distinct(components, tmp_path):
    from workers.model.tiny_image_components import _write_decoder

    _write_decoder(tmp_path / "same", 0, "decoder")
    _write_decoder(tmp_path / "other", 1, "decoder")
    again = _tensors(tmp_path / "same/model.safetensors")
    first = _tensors(components / "decoder/model.safetensors")
    other = _tensors(tmp_path / "other/model.safetensors")
    turbo = _tensors(components / "decoder-turbo/model.safetensors")
    key = "layers.0.feed_forward.w1.weight"
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert not torch.equal(other[key], first[key])
    assert not torch.equal(turbo[key], first[key])
