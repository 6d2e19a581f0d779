"""The SigLIP ViT + cosine VQ of docs/model.md §4.2, built from transformers' GLM-Image classes.

transformers 5.24's `GlmImageVisionModel` and `GlmImageVQVAE` take the official tensor names exactly once the
`model.` prefix is stripped (§4.3, §9 [VERIFIED]) and compute what §4.2 describes: learned position table
resampled bilinearly at patch centres (`grid_sample`, align_corners=False, border), pre-LN blocks with fused
[q|k|v], no final LayerNorm, `quant_conv`, L2-normalised features and codebook, argmin distance. So we use
them rather than a copy of our own; `tests/model/test_image_tokenizer.py` checks the wiring against the
library used directly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from transformers import GlmImageVisionConfig, GlmImageVQVAEConfig
from transformers.models.glm_image.modeling_glm_image import GlmImageVisionModel, GlmImageVQVAE

# §4.1: one token per 16-px patch in raster order needs merge 1 (an older upstream config had merge 2).
SUPPORTED_MERGE_SIZE = 1


def _sub_config(config: Mapping, key: str, cls):
    if key not in config or not isinstance(config[key], Mapping):
        raise ValueError(f"image_tokenizer/config.json: missing object field {key!r}")
    fields = {k: v for k, v in config[key].items() if k != "model_type"}
    # Fields absent from the file take GLM-Image's defaults, which equal the official values (§4.2 [INFERRED]).
    return cls(**fields)


class SigLipVQ(nn.Module):
    """`visual` (ViT) + `vqmodel` (quant_conv + cosine codebook); keys = the official ones minus `model.`."""

    def __init__(self, vision: GlmImageVisionConfig, vq: GlmImageVQVAEConfig):
        super().__init__()
        if vision.spatial_merge_size != SUPPORTED_MERGE_SIZE:
            raise ValueError(
                f"image_tokenizer/config.json: vision_config.spatial_merge_size is {vision.spatial_merge_size}; "
                f"only {SUPPORTED_MERGE_SIZE} (one token per patch, §4.1) is supported"
            )
        if vq.latent_channels != vision.hidden_size:
            raise ValueError(
                f"image_tokenizer/config.json: vq_config.latent_channels ({vq.latent_channels}) must equal "
                f"vision_config.hidden_size ({vision.hidden_size})"
            )
        vision._attn_implementation = "sdpa"  # full bidirectional attention within the one image
        self.visual = GlmImageVisionModel(vision)
        self.vqmodel = GlmImageVQVAE(vq)
        self.patch_size = vision.patch_size
        self.codebook_size = vq.num_embeddings
        self.eval()

    @torch.inference_mode()
    def features(self, patches: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """ViT output [h·w, hidden] for one image's patch vectors [h·w, C·T·p·p] (raster order)."""
        grid_thw = torch.tensor([[1, h, w]], device=patches.device)
        dtype = self.visual.patch_embed.proj.weight.dtype
        return self.visual(patches.to(dtype), grid_thw=grid_thw).last_hidden_state

    @torch.inference_mode()
    def codes(self, features: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """VQ codes [h·w] (raster order) for ViT features [h·w, hidden]."""
        grid = features.view(h, w, -1).permute(2, 0, 1).unsqueeze(0)  # [1, hidden, h, w]
        return self.vqmodel.encode(grid).image_tokens.view(-1)


def build_siglip_vq(config: Mapping) -> SigLipVQ:
    """Module from the parsed image_tokenizer/config.json (build it under `torch.device("meta")` to load)."""
    return SigLipVQ(
        _sub_config(config, "vision_config", GlmImageVisionConfig),
        _sub_config(config, "vq_config", GlmImageVQVAEConfig),
    )
