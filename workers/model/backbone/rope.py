"""Partial rotate-half rotary position embedding (docs/model.md §2.2).

Only the first `rotary_dim` dims of each head rotate (NeoX "rotate-half" on those dims); the rest pass
through. `inv_freq` is a non-persistent buffer: it is not in the checkpoint, so after a meta-device build
the loader calls `reset_inv_freq()` to compute it on the target device.
"""

from __future__ import annotations

import torch
from torch import nn


def inverse_frequencies(rotary_dim: int, theta: float, device: torch.device | str | None = None) -> torch.Tensor:
    """1 / theta^(j / rotary_dim) for j = 0, 2, …, rotary_dim − 2, in fp32."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim
    return 1.0 / (theta**exponents)


class RotaryEmbedding(nn.Module):
    def __init__(self, rotary_dim: int, theta: float):
        super().__init__()
        self.rotary_dim = rotary_dim
        self.theta = theta
        self.register_buffer("inv_freq", inverse_frequencies(rotary_dim, theta), persistent=False)

    def reset_inv_freq(self, device: torch.device | str) -> None:
        self.inv_freq = inverse_frequencies(self.rotary_dim, self.theta, device=device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [B, L, rotary_dim] for Long positions [B, L], computed in fp32, cast to dtype."""
        freqs = position_ids[..., None].float() * self.inv_freq.float()
        angles = torch.cat((freqs, freqs), dim=-1)  # the half-frequencies concatenated with themselves
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_partial_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, head_dim]; cos/sin: [B, L, rotary_dim]. Rotates the leading rotary_dim dims."""
    rotary_dim = cos.shape[-1]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    rot, keep = x[..., :rotary_dim], x[..., rotary_dim:]
    return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)
