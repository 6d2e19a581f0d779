"""The LLaDA2.0-Uni backbone: `LLaDA2MoeModelLM` with the official module/parameter names (docs/model.md §2.3).

Forward contract (agreed with the sampler, see `LLaDA2MoeModelLM.forward`): additive masks over
[past ; current] keys, a per-layer (k, v) cache, `logits_to_keep`, and optional per-key attention mass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from ..config import BackboneConfig
from ..errors import ModelInputError
from .attention import Attention, KVCache
from .mlp import SwiGLU
from .moe import MoE
from .norm import RMSNorm
from .rope import RotaryEmbedding


class BackboneOutput(NamedTuple):
    logits: torch.Tensor  # [B, Lq or logits_to_keep, vocab] float32
    past_key_values: list[KVCache] | None  # per layer (k, v) [B, kv_heads, L_past + Lq, head_dim]
    key_importance: torch.Tensor | None  # [B, Lk] float32, rows sum to 1


class DecoderLayer(nn.Module):
    def __init__(self, cfg: BackboneConfig, index: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if cfg.is_moe_layer(index) else SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask, past, query_weights):
        attn, kv, importance = self.attention(self.input_layernorm(x), cos, sin, mask, past, query_weights)
        h = x + attn
        return h + self.mlp(self.post_attention_layernorm(h)), kv, importance


class LLaDA2MoeModel(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(cfg.rotary_dim, cfg.rope_theta)


class LLaDA2MoeModelLM(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.config = cfg
        self.model = LLaDA2MoeModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)  # untied (§2.1)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        key_importance: bool = False,
        *,
        attention_allowed: torch.Tensor | None = None,
        importance_queries: int | Sequence[int] | torch.Tensor = 0,
    ) -> BackboneOutput:
        """Run the backbone on `input_ids` [B, Lq] at `position_ids` [B, Lq] (None: past_len … past_len+Lq−1).

        attention_mask: additive [B or 1, 1, Lq, Lk] (0 visible, −inf blocked; a bool mask with True =
        visible is also accepted) over keys [past ; current], Lk = past_len + Lq; None = all visible.
        attention_allowed: the same as a bool [B, Lq, Lk] (True = may attend); give one of the two.
        The logits [B, Lq, vocab] are `.logits` of the result (fp32).
        past_key_values: one (k, v) per layer, k after q/k-norm and RoPE. use_cache: return past+current KV.
        logits_to_keep: n > 0 → lm_head on the last n positions only. key_importance: also return the
        attention mass each key receives, averaged over layers, heads and queries (explicit fp32 softmax).
        importance_queries: with key_importance, average over the last n queries only (an int, or one n per
        row; 0 = every query): the output still comes from the fused attention, and the
        explicit softmax covers those n queries alone.
        """
        cfg = self.config
        if attention_allowed is not None:
            if attention_mask is not None:
                raise ModelInputError("attention_allowed", "give attention_mask or attention_allowed, not both")
            if attention_allowed.dtype != torch.bool or attention_allowed.dim() != 3:
                raise ModelInputError("attention_allowed", "expected a bool [B, Lq, Lk] tensor, got "
                                      f"{attention_allowed.dtype} {list(attention_allowed.shape)}")
            attention_mask = attention_allowed[:, None]
        if position_ids is None:
            start = self._check_past(past_key_values, input_ids.shape[0]) if input_ids.dim() == 2 else 0
            position_ids = torch.arange(start, start + input_ids.shape[-1], device=input_ids.device)
            position_ids = position_ids.expand_as(input_ids)
        if input_ids.dim() != 2 or position_ids.shape != input_ids.shape:
            raise ModelInputError("position_ids", f"input_ids {list(input_ids.shape)} must be [B, L] and "
                                  f"position_ids the same shape, got {list(position_ids.shape)}")
        batch, length = input_ids.shape
        past_len = self._check_past(past_key_values, batch)
        h = self.model.word_embeddings(input_ids)
        cos, sin = self.model.rotary_emb(position_ids, h.dtype)
        mask, live = _prepare_mask(attention_mask, batch, length, past_len + length, h.dtype, h.device)
        query_weights = _query_weights(live, length, h.device, importance_queries) if key_importance else None
        presents: list[KVCache] = []
        importance = None
        for i, layer in enumerate(self.model.layers):
            past = past_key_values[i] if past_key_values is not None else None
            h, kv, layer_importance = layer(h, cos, sin, mask, past, query_weights)
            if use_cache:
                presents.append(kv)
            if layer_importance is not None:
                importance = layer_importance if importance is None else importance + layer_importance
        h = self.model.norm(h)
        if logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h).float()
        if importance is not None:
            importance = importance / cfg.num_hidden_layers
        return BackboneOutput(logits, presents if use_cache else None, importance)

    def _check_past(self, past: list[KVCache] | None, batch: int) -> int:
        if past is None:
            return 0
        if len(past) != self.config.num_hidden_layers:
            raise ModelInputError("past_key_values", f"expected {self.config.num_hidden_layers} (k, v) pairs, "
                                  f"got {len(past)}")
        k = past[0][0]
        if k.dim() != 4 or k.shape[0] != batch:
            raise ModelInputError("past_key_values", f"cached keys {list(k.shape)} must be "
                                  f"[B={batch}, kv_heads, L_past, head_dim]")
        return k.shape[2]


def _prepare_mask(
    mask: torch.Tensor | None, batch: int, lq: int, lk: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The additive mask in the compute dtype, and which queries can see at least one key
    ([B|1, 1, Lq, 1] bool; None when there is no mask)."""
    if mask is None:
        return None, None
    if mask.dim() != 4 or mask.shape[0] not in (1, batch) or tuple(mask.shape[1:]) != (1, lq, lk):
        raise ModelInputError("attention_mask", f"expected [B or 1, 1, {lq}, {lk}] (keys = past + current), "
                              f"got {list(mask.shape)}")
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask.to(device), float("-inf"))
    mask = mask.to(device=device, dtype=dtype)
    # A query that may see no key at all (e.g. a CFG left-pad row whose whole block is padding) would give
    # NaN, and NaN values leak into every row through 0·NaN in the next layer. Such rows are never read,
    # so we let them see every key instead; all other rows are unchanged.
    fully_blocked = torch.isneginf(mask).all(dim=-1, keepdim=True)
    return mask.masked_fill(fully_blocked, 0.0), ~fully_blocked


def _query_weights(live: torch.Tensor | None, lq: int, device: torch.device,
                   tail: int | Sequence[int] | torch.Tensor = 0) -> torch.Tensor:
    """Per-query weights [B|1, 1, n, 1] for the last n queries (n = the largest tail; a tail of 0 means all
    lq queries), summing to 1 over a row's own last `tail` queries that can see some key: key importance
    averages over those, so padding rows (which were let see everything) and queries before a row's tail
    add nothing. Tails are Python ints, so sizing this needs nothing back from the device."""
    tails = [tail] if isinstance(tail, int) else [int(t) for t in (tail.tolist() if torch.is_tensor(tail) else tail)]
    tails = [t if t > 0 else lq for t in tails]
    n = max(tails)
    if n > lq:
        raise ModelInputError("importance_queries", f"must be at most the query length {lq}, got {n}")
    weights = torch.ones((1, 1, lq, 1), device=device) if live is None else live.float()
    weights = weights[:, :, lq - n :]
    if any(t != n for t in tails):  # a row with a shorter tail: its queries before it weigh nothing
        starts = torch.tensor([n - t for t in tails], device=device)
        own = torch.arange(n, device=device) >= starts[:, None]  # [B, n]
        weights = weights * own[:, None, :, None].float()
    return weights / weights.sum(dim=2, keepdim=True).clamp(min=1.0)
