"""Tiny, seeded image components in the official checkpoint layout (docs/model.md §10).

`write_image_components(folder, seed)` writes `image_tokenizer/`, `decoder/`, `decoder-turbo/` and `vae/` under
`folder` with the official file names, key names, config field sets and dtypes (bf16), but the small sizes
of docs/model.md §10.2. Weights are random but informative (norm weights near 1, projections ~N(0, 0.02),
non-zero pad tokens) and deterministic per seed. The backbone author's `make_tiny_checkpoint` calls this.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

# §4.1: copied unchanged from the official image_tokenizer/preprocessor_config.json.
PREPROCESSOR_CONFIG = {
    "min_pixels": 262144,
    "max_pixels": 4194304,
    "do_rescale": True,
    "do_normalize": True,
    "do_resize": False,
    "patch_size": 16,
    "temporal_patch_size": 1,
    "merge_size": 1,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "GlmImageImageProcessor",
    "processor_class": "GlmImageProcessor",
    "resample": 3,
    "rescale_factor": 1 / 255,
}

# §10.2 image tokenizer sizes. The official config.json was never seen (§11 q6); its structure here is
# transformers' GLM-Image `vision_config` + `vq_config`, the documented choice of §10.2.
TINY_VISION_CONFIG = {
    "model_type": "glm_image_vision",
    "depth": 2,
    "hidden_size": 48,
    "hidden_act": "gelu",
    "attention_bias": True,
    "attention_dropout": 0.0,
    "num_heads": 2,
    "in_channels": 3,
    "image_size": 512,
    "patch_size": 16,
    "spatial_merge_size": 1,
    "intermediate_size": 192,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
}
TINY_VQ_CONFIG = {
    "model_type": "glm_image_vqmodel",
    "embed_dim": 32,
    "num_embeddings": 64,
    "latent_channels": 48,
    "in_channels": 3,
    "initializer_range": 0.02,
}
TINY_SIGVQ_WIDTH = 40  # = tiny decoder cap_feat_dim (§10.2)

# §5.2 field set of decoder-turbo/config.json with the §10.2 sizes.
TINY_DECODER_CONFIG = {
    "_class_name": "ZImageTransformer2DModel",
    "_diffusers_version": "0.37.0.dev0",
    "all_f_patch_size": [1],
    "all_patch_size": [2],
    "axes_dims": [32, 48, 48],
    "axes_lens": [32768, 1024, 1024],
    "cap_feat_dim": TINY_SIGVQ_WIDTH,
    "dim": 384,
    "in_channels": 16,
    "n_heads": 3,
    "n_kv_heads": 3,
    "n_layers": 2,
    "n_refiner_layers": 1,
    "norm_eps": 1e-05,
    "qk_norm": True,
    "rope_theta": 256.0,
    "siglip_feat_dim": None,
    "t_scale": 1000.0,
}

# §5.5 FLUX.1-dev VAE field set with the §10.2 sizes (4 levels kept → 8× downsampling).
TINY_VAE_CONFIG = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.30.0.dev0",
    "_name_or_path": "../checkpoints/flux-dev",
    "act_fn": "silu",
    "block_out_channels": [32, 32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 1,
    "mid_block_add_attention": True,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}

_STORED_DTYPE = torch.bfloat16  # §10.1 rule 3


def _generator(seed: int, component: str) -> torch.Generator:
    # One independent stream per component so that adding a component never changes another's weights.
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(component.encode()))


def _informative(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random tensor whose scale suits its role (§10.1 rule 7)."""
    noise = torch.randn(shape, generator=gen)
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in name and leaf == "weight" and len(shape) == 1:
        value = 1.0 + 0.1 * noise  # norm weights near 1
    elif "pad_token" in name:
        value = 0.5 * noise  # non-zero pad tokens: a zero pad would hide a missing load
    elif "embedding" in name and len(shape) == 2 and "position" not in name:
        value = noise  # codebooks / token embeddings: unit scale, so cosine VQ and features vary
    else:
        value = 0.02 * noise  # projections and biases ~ N(0, 0.02), the official initializer_range
    return value.to(_STORED_DTYPE).contiguous()


def _random_state(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {name: _informative(name, shape, gen) for name, shape in sorted(shapes.items())}


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in module.state_dict().items()}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _write_image_tokenizer(folder: Path, seed: int) -> None:
    from workers.model.image_tokenizer.model import build_siglip_vq

    folder.mkdir(parents=True, exist_ok=True)
    config = {"vision_config": TINY_VISION_CONFIG, "vq_config": TINY_VQ_CONFIG}
    _write_json(folder / "config.json", config)
    _write_json(folder / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    with torch.device("meta"):
        module = build_siglip_vq(config)
    # The module's keys are `visual.*` / `vqmodel.*`; the official file carries `model.visual.*` / `model.vqmodel.*`.
    shapes = {f"model.{name}": shape for name, shape in _shapes(module).items()}
    save_file(_random_state(shapes, _generator(seed, "image_tokenizer")), folder / "model.safetensors",
              metadata={"format": "pt"})

    from workers.model.decoder.sigvq import SigVQEmbedder

    with torch.device("meta"):
        sigvq = SigVQEmbedder(TINY_VQ_CONFIG["num_embeddings"], TINY_SIGVQ_WIDTH)
    torch.save(_random_state(_shapes(sigvq), _generator(seed, "sigvq")), folder / "sigvq_embedding.pt")


def _write_decoder(folder: Path, seed: int, component: str) -> None:
    from diffusers import ZImageTransformer2DModel

    from workers.model.decoder.transformer import CHECKPOINT_CAP_PREFIX, DIFFUSERS_CAP_PREFIX

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", TINY_DECODER_CONFIG)
    with torch.device("meta"):
        module = ZImageTransformer2DModel.from_config(TINY_DECODER_CONFIG)
    # The checkpoint names the caption embedder `semantic_embedder` (§5.3), not diffusers' `cap_embedder`.
    shapes = {
        (CHECKPOINT_CAP_PREFIX + name[len(DIFFUSERS_CAP_PREFIX):] if name.startswith(DIFFUSERS_CAP_PREFIX) else name): s
        for name, s in _shapes(module).items()
    }
    save_file(_random_state(shapes, _generator(seed, component)), folder / "model.safetensors",
              metadata={"format": "pt"})


def _write_vae(folder: Path, seed: int) -> None:
    from diffusers import AutoencoderKL

    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", TINY_VAE_CONFIG)
    with torch.device("meta"):
        module = AutoencoderKL.from_config(TINY_VAE_CONFIG)
    save_file(_random_state(_shapes(module), _generator(seed, "vae")),
              folder / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})


def write_image_components(folder: str | Path, seed: int = 0) -> None:
    """Write image_tokenizer/, decoder/, decoder-turbo/ and vae/ under `folder` (tiny sizes, seeded)."""
    folder = Path(folder)
    _write_image_tokenizer(folder / "image_tokenizer", seed)
    _write_decoder(folder / "decoder", seed, "decoder")
    _write_decoder(folder / "decoder-turbo", seed, "decoder-turbo")  # a different stream: distinct weights
    _write_vae(folder / "vae", seed)
