"""SigLIP-VQ tokenizer: preprocessing per preprocessor_config.json, strict loading, and codes/features equal to
transformers' GLM-Image classes used directly on the same tiny weights."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from workers.model.image_tokenizer import load_image_tokenizer
from workers.model.weights import CheckpointError


def _noise_image(width, height, seed=0, mode="RGB"):
    channels = len(mode)
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def tokenizer(tiny_ckpt):
    return load_image_tokenizer(tiny_ckpt)


def _library_reference(folder):
    """transformers' own modules, built normally and filled by torch's strict load_state_dict."""
    from transformers import GlmImageVisionConfig, GlmImageVQVAEConfig
    from transformers.models.glm_image.modeling_glm_image import GlmImageVisionModel, GlmImageVQVAE

    config = json.loads((folder / "config.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if k != "model_type"}  # noqa: E731
    visual = GlmImageVisionModel(GlmImageVisionConfig(**strip(config["vision_config"]))).eval()
    vq = GlmImageVQVAE(GlmImageVQVAEConfig(**strip(config["vq_config"]))).eval()
    state = {k: v.float() for k, v in load_file(folder / "model.safetensors").items()}
    visual.load_state_dict({k[len("model.visual."):]: v for k, v in state.items() if k.startswith("model.visual.")})
    vq.load_state_dict({k[len("model.vqmodel."):]: v for k, v in state.items() if k.startswith("model.vqmodel.")})
    return visual, vq


def test_preprocessing_equals_transformers_processor(tokenizer, tiny_ckpt):
    from transformers.models.glm_image.image_processing_pil_glm_image import GlmImageImageProcessorPil

    config = json.loads((tiny_ckpt / "image_tokenizer/preprocessor_config.json").read_text())
    library = GlmImageImageProcessorPil(**config)
    image = _noise_image(80, 48, seed=3)
    ours, (h, w) = tokenizer.preprocess(image)
    theirs = library(images=[image], return_tensors="pt")
    assert (h, w) == (3, 5) and theirs["image_grid_thw"].tolist() == [[1, 3, 5]]
    torch.testing.assert_close(ours, theirs["pixel_values"].float(), rtol=0, atol=1e-6)


def test_rgba_composited_on_white_and_rescale_then_normalise(tokenizer):
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = 128
    rgba[:8, ..., 3] = 0  # top half fully transparent → white
    rgba[8:, ..., 3] = 255  # bottom half opaque grey 128
    patches, _ = tokenizer.preprocess(Image.fromarray(rgba))
    vec = patches[0].view(3, 16, 16)
    assert torch.all(vec[:, :8] == 1.0)
    grey = (np.float32(128) * np.float32(1 / 255) - np.float32(0.5)) / np.float32(0.5)
    assert torch.all(vec[:, 8:] == torch.tensor(grey))


def test_patches_in_raster_order_with_channel_major_vectors(tokenizer):
    h, w = 2, 3
    pixels = np.zeros((h * 16, w * 16, 3), dtype=np.uint8)
    for r in range(h):
        for c in range(w):
            pixels[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = (10 * (r * w + c), 200, 7)
    patches, grid = tokenizer.preprocess(Image.fromarray(pixels))
    assert grid == (h, w) and patches.shape == (h * w, 3 * 16 * 16)
    red = patches.view(h * w, 3, 256)[:, 0, 0]
    expected = (torch.arange(h * w, dtype=torch.float32) * 10 / 255 - 0.5) / 0.5
    torch.testing.assert_close(red, expected)
    assert torch.all(patches.view(h * w, 3, 256)[:, 1] == patches[0, 256])  # green block follows red


def test_size_not_multiple_of_16_is_refused_with_the_size(tokenizer):
    with pytest.raises(ValueError, match="30x32"):
        tokenizer.encode(_noise_image(30, 32))


def test_codes_and_features_equal_transformers(tokenizer, tiny_ckpt):
    visual, vq = _library_reference(tiny_ckpt / "image_tokenizer")
    image = _noise_image(64, 48, seed=5)
    patches, (h, w) = tokenizer.preprocess(image)
    with torch.no_grad():
        expected = visual(patches, grid_thw=torch.tensor([[1, h, w]])).last_hidden_state
        expected_codes = vq.encode(expected.view(h, w, -1).permute(2, 0, 1)[None]).image_tokens.tolist()
    features, fh, fw = tokenizer.features(image)
    codes, ch, cw = tokenizer.encode(image)
    assert (fh, fw, ch, cw) == (h, w, h, w) == (3, 4, 3, 4)
    torch.testing.assert_close(features, expected, rtol=1e-5, atol=1e-5)
    assert codes == expected_codes
    assert len(set(codes)) > 3  # the tiny weights are informative: patches get different codes


def test_bf16_compute_and_subfolder_path(tiny_ckpt):
    tok = load_image_tokenizer(tiny_ckpt / "image_tokenizer", dtype=torch.bfloat16)
    feats, h, w = tok.features(_noise_image(32, 48))
    codes, _, _ = tok.encode(_noise_image(32, 48))
    assert feats.dtype == torch.bfloat16 and (h, w) == (3, 2)
    assert len(codes) == 6 and all(0 <= c < tok.codebook_size for c in codes)


def _copy_with_state(tiny_ckpt, tmp_path, edit, name="model.safetensors"):
    folder = tmp_path / "image_tokenizer"
    shutil.copytree(tiny_ckpt / "image_tokenizer", folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    edit(state)
    save_file(state, folder / name)
    return folder


def test_weight_file_name_is_globbed(tiny_ckpt, tmp_path):
    folder = _copy_with_state(tiny_ckpt, tmp_path, lambda s: None, name="image_tokenizer.safetensors")
    codes, _, _ = load_image_tokenizer(tmp_path).encode(_noise_image(32, 32))
    assert len(codes) == 4 and folder.is_dir()


def test_strict_loading_lists_missing_unexpected_and_misshaped(tiny_ckpt, tmp_path):
    def edit(state):
        del state["model.visual.blocks.0.mlp.fc1.bias"]
        state["model.vqmodel.extra.weight"] = torch.zeros(2)
        state["model.vqmodel.quant_conv.bias"] = torch.zeros(5)

    _copy_with_state(tiny_ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        load_image_tokenizer(tmp_path)
    message = str(err.value)
    assert "image_tokenizer" in message
    assert "missing (1): visual.blocks.0.mlp.fc1.bias" in message
    assert "unexpected (1): vqmodel.extra.weight" in message
    assert "mis-shaped (1): vqmodel.quant_conv.bias" in message


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_tokenizer"):
        load_image_tokenizer(tmp_path)
