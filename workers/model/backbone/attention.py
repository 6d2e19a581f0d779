"""Fused-QKV grouped-query attention with per-head q/k RMSNorm and partial RoPE (docs/model.md §2.2).

Two paths give the same output: the fast one uses `scaled_dot_product_attention` (its kernels keep the
softmax in fp32); the explicit one computes fp32 softmax probabilities, a chunk of queries at a time, so the
caller can read how much attention each key receives (`key_importance`, used by SPRINT prefix pruning).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig
from .norm import RMSNorm
from .rope import apply_partial_rope

KVCache = tuple[torch.Tensor, torch.Tensor]

# The explicit path works through the queries in chunks of at most this many fp32 scores: a whole 4.6k-token
# window would otherwise hold ~1.3 GB of probabilities per CFG row per layer on the real model.
SCORES_PER_CHUNK = 1 << 26


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[B, kv_heads, L, D] → [B, kv_heads·groups, L, D]; query head h reads kv head h // groups."""
    if groups == 1:
        return x
    b, kv, length, d = x.shape
    return x[:, :, None].expand(b, kv, groups, length, d).reshape(b, kv * groups, length, d)


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    query_weights: torch.Tensor,
    scale: float,
    scores_per_chunk: int = SCORES_PER_CHUNK,
    with_output: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Attention with fp32 softmax probabilities, plus the mass each key receives (weighted mean over
    queries, plain mean over heads) → (out [B, heads, Lq, D] or None without `with_output`, importance
    [B, Lk])."""
    b, heads, lq, _ = q.shape
    chunk = max(1, scores_per_chunk // (b * heads * k.shape[2]))
    outs, mass = [], None
    for start in range(0, lq, chunk):
        rows = slice(start, start + chunk)
        scores = torch.matmul(q[:, :, rows], k.transpose(2, 3)) * scale
        if mask is not None:
            scores = scores + mask[:, :, rows]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
        part = (probs * query_weights[:, :, rows]).sum(dim=2)
        mass = part if mass is None else mass + part
        if with_output:
            outs.append(torch.matmul(probs.to(v.dtype), v))
    return (torch.cat(outs, dim=2) if with_output else None), mass.mean(dim=1)


class Attention(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.query_key_value = nn.Linear(cfg.hidden_size, cfg.qkv_width, bias=cfg.use_qkv_bias)
        if cfg.use_qk_norm:
            self.query_layernorm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
            self.key_layernorm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps)
        else:
            self.query_layernorm = self.key_layernorm = None
        self.dense = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=cfg.use_bias)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        past: KVCache | None,
        query_weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, KVCache, torch.Tensor | None]:
        """x [B, Lq, hidden]; mask additive [B|1, 1, Lq, Lk] in x's dtype or None; query_weights
        [B|1, 1, n, 1] for the last n queries (summing to 1 over them) requests key importance: explicit
        softmax over those n queries (the whole output too when n = Lq; otherwise that comes from SDPA).

        Returns (output, (k, v) over past+current keys, per-key attention mass [B, Lk] or None)."""
        b, length, _ = x.shape
        qkv = self.query_key_value(x).view(b, length, self.heads + 2 * self.kv_heads, self.head_dim)
        q, k, v = qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        if self.query_layernorm is not None:
            q, k = self.query_layernorm(q), self.key_layernorm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, L, D]
        q, k = apply_partial_rope(q, cos, sin), apply_partial_rope(k, cos, sin)
        if past is not None:
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
        groups = self.heads // self.kv_heads
        kr, vr = repeat_kv(k, groups), repeat_kv(v, groups)
        importance = None
        tail = 0 if query_weights is None else query_weights.shape[2]
        if tail == length:
            out, importance = explicit_attention(q, kr, vr, mask, query_weights, self.scale)
        else:
            out = F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=self.scale)
            if tail:  # the mass only the last `tail` queries give: explicit softmax over those rows alone
                tail_mask = None if mask is None else mask[:, :, -tail:]
                _, importance = explicit_attention(q[:, :, -tail:], kr, vr, tail_mask, query_weights, self.scale,
                                                   with_output=False)
        out = out.transpose(1, 2).reshape(b, length, self.heads * self.head_dim)
        return self.dense(out), (k, v), importance
