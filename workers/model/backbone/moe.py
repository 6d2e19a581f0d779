"""Sigmoid-scored, group-limited top-k mixture of experts with a shared expert (docs/model.md §2.2).

Tokens are grouped by expert: the (token, slot) pairs are sorted by expert id, the experts run over their
contiguous slices, and the weighted results are scattered back with `index_add_`. Once the loader has packed
the experts (`pack_experts`, see grouped_experts.py) that is two grouped matmuls per layer; unpacked, or where
the device has no grouped matmul, a Python loop over the experts that received tokens. Never one over tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import BackboneConfig
from .grouped_experts import PackedExperts, pack_experts
from .mlp import SwiGLU

# §2.2 step 5: the renormalisation denominator is (sum of chosen scores + 1e-20).
_RENORM_EPS = 1e-20


class MoEGate(nn.Module):
    """Router: fp32 logits → sigmoid → + expert_bias → group-limited top-k → renormalised un-biased scores."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.top_k = cfg.num_experts_per_tok
        self.n_group = cfg.n_group
        self.topk_group = cfg.topk_group
        self.scaling = cfg.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(cfg.num_experts, cfg.hidden_size))
        # Persistent and fp32 in the checkpoint; the loader keeps its dtype when the model is cast.
        self.register_buffer("expert_bias", torch.zeros(cfg.num_experts, dtype=torch.float32), persistent=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [T, hidden] → (expert ids [T, top_k] int64, weights [T, top_k] fp32)."""
        logits = torch.nn.functional.linear(x.float(), self.weight.float())
        scores = logits.sigmoid()
        routing = scores + self.expert_bias.float()
        tokens, experts = routing.shape
        grouped = routing.view(tokens, self.n_group, experts // self.n_group)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1)  # [T, n_group]
        keep_groups = group_scores.topk(self.topk_group, dim=-1).indices
        group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep_groups, True)
        expert_mask = group_mask[:, :, None].expand_as(grouped).reshape(tokens, experts)
        candidates = routing.masked_fill(~expert_mask, float("-inf"))
        ids = candidates.topk(self.top_k, dim=-1).indices
        weights = scores.gather(1, ids)  # un-biased scores: the bias only steers the choice
        weights = weights / (weights.sum(dim=-1, keepdim=True) + _RENORM_EPS) * self.scaling
        return ids, weights


class MoE(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.gate = MoEGate(cfg)
        self.experts = nn.ModuleList(
            SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size) for _ in range(cfg.num_experts)
        )
        self.shared_experts = (
            SwiGLU(cfg.hidden_size, cfg.moe_intermediate_size * cfg.num_shared_experts)
            if cfg.num_shared_experts > 0
            else None
        )
        self.packed: PackedExperts | None = None  # set by pack_experts() after loading

    def pack_experts(self) -> bool:
        """Stack the loaded experts for grouped matmuls (each expert keeps a view); False if unavailable here."""
        if self.packed is None:
            self.packed = pack_experts(self.experts)
        return self.packed is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        ids, weights = self.gate(flat)
        out = self.routed(flat, ids, weights)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat).float()  # fp32 accumulation (SGO-PR#2257)
        return out.to(x.dtype).view(shape)

    def routed(self, flat: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_k w_k · Expert_{ids_k}(x) per token, in fp32, grouping tokens by expert."""
        top_k = ids.shape[1]
        flat_ids = ids.reshape(-1)
        order = flat_ids.argsort(stable=True)
        token_of = order // top_k  # which token each sorted (token, slot) pair came from
        counts = torch.bincount(flat_ids, minlength=len(self.experts))
        inputs = flat.index_select(0, token_of)
        if self.packed is not None:
            outputs = self.packed(inputs, counts.cumsum(0).to(torch.int32))
        else:
            outputs = self._expert_loop(inputs, counts.tolist())
        contrib = outputs.float() * weights.reshape(-1)[order, None]
        return torch.zeros(flat.shape, dtype=torch.float32, device=flat.device).index_add_(0, token_of, contrib)

    def _expert_loop(self, inputs: torch.Tensor, counts: list[int]) -> torch.Tensor:
        outputs = torch.empty_like(inputs)
        start = 0
        for expert, count in enumerate(counts):
            if count:
                outputs[start : start + count] = self.experts[expert](inputs[start : start + count])
                start += count
        return outputs
