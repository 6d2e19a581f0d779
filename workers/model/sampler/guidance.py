"""Classifier-free guidance over the branch rows of one request (docs/model.md §3.2)."""

from __future__ import annotations

import torch


def guided_logits(
    rows: torch.Tensor,
    *,
    cfg_scale: float,
    cfg_image_scale: float,
    cfg_rescale: float = 0.0,
) -> torch.Tensor:
    """rows [R, B, V] (R = 1, 2 or 3 branches) -> guided logits [B, V] in fp32.

    R = 2: u + s (c - u)           (only called with s != 1; with s == 1 the request keeps one row)
    R = 3: nt + s_t (c - nt) + s_i (nt - ni)   (docs/model.md §3.2 / open question 4: sglang's formula)
    """
    rows = rows.float()
    cond = rows[0]
    if rows.shape[0] == 1:
        return cond
    if rows.shape[0] == 2:
        guided = rows[1] + cfg_scale * (cond - rows[1])
    else:
        no_text, no_image = rows[1], rows[2]
        guided = no_text + cfg_scale * (cond - no_text) + cfg_image_scale * (no_text - no_image)
    if cfg_rescale > 0:
        guided = rescale(guided, cond, cfg_rescale)
    return guided


def rescale(guided: torch.Tensor, cond: torch.Tensor, rho: float) -> torch.Tensor:
    """Optional std rescale (§3.2, open question 3; off by default): std per position over the vocabulary."""
    ratio = cond.std(dim=-1, keepdim=True) / guided.std(dim=-1, keepdim=True).clamp_min(1e-12)
    return rho * guided * ratio + (1.0 - rho) * guided


def restrict_to_images(logits: torch.Tensor, image_token_offset: int) -> torch.Tensor:
    """Image-only vocabulary (§3.2): every id below `image_token_offset` becomes -inf."""
    restricted = logits.clone()
    restricted[..., :image_token_offset] = float("-inf")
    return restricted
