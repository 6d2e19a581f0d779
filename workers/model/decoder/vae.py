"""The FLUX VAE (docs/model.md §5.5) through diffusers' `AutoencoderKL`, loaded strictly from `vae/`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from workers.model.weights import TensorSource, assert_materialised, load_strict

COMPONENT = "vae"


def load_vae(folder: str | Path, *, device: torch.device | str, dtype: torch.dtype) -> AutoencoderKL:
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    with TensorSource.from_folder(folder) as source:
        load_strict(vae, source, component=COMPONENT, device=device, dtype=dtype)
    assert_materialised(vae, COMPONENT)
    return vae.eval()


def latents_to_pixels(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """DiT latents [B, 16, H/8, W/8] → pixels in [0, 1], [B, 3, H, W] float32 (§5.4 "VAE decode")."""
    scaled = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
    with torch.inference_mode():
        decoded = vae.decode(scaled, return_dict=False)[0]
    return ((decoded + 1) / 2).clamp(0, 1).float()
