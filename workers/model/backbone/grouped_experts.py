"""All routed experts of one MoE layer as two stacked weight tensors, run with grouped matmuls.

The checkpoint stores every expert separately (`experts.{e}.gate_proj/up_proj/down_proj.weight`, docs/model.md
§2.3). After loading, `pack_experts` copies them once into `gate_up [E, 2I, H]` and `down [E, H, I]` and
re-points each expert's Linear at its slice, so module names, `state_dict` and memory stay single.

A layer's expert compute is then two `torch.nn.functional.grouped_mm` calls over the (token, slot) rows
sorted by expert, with the group ends as a device tensor: no Python loop over experts and no host sync to
count tokens per expert. On CUDA (SM90+, bf16) that is one grouped GEMM kernel per projection; on a CPU
torch runs it as a per-expert loop in C++, i.e. the same FLOPs as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# Public since torch 2.10; the same op as torch._grouped_mm (2.8+), which a device image with an older torch
# may offer instead (the benchmarks in bench/gpu_*.py run on such an image).
_grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


@dataclass(frozen=True)
class PackedExperts:
    gate_up: torch.Tensor  # [E, 2·inner, hidden]: gate_proj rows, then up_proj rows
    down: torch.Tensor  # [E, hidden, inner]

    @property
    def inner(self) -> int:
        return self.down.shape[2]

    def __call__(self, rows: torch.Tensor, group_ends: torch.Tensor) -> torch.Tensor:
        """rows [N, hidden] sorted by expert; group_ends [E] int32, cumulative row counts → [N, hidden]."""
        h = _grouped_mm(rows, self.gate_up.transpose(1, 2), offs=group_ends)
        gate, up = h.split(self.inner, dim=-1)
        return _grouped_mm(F.silu(gate) * up, self.down.transpose(1, 2), offs=group_ends)


def pack_experts(experts: nn.ModuleList) -> PackedExperts | None:
    """Stack the experts' weights (one layer's worth of extra memory while copying) and make each expert's
    parameters views of the stack. None, leaving the experts untouched, where this device/dtype/shape has
    no grouped matmul (for example fp64, or rows not 16-byte aligned)."""
    if _grouped_mm is None:
        log.warning("this torch has no grouped matmul; using the per-expert loop")
        return None
    first = experts[0]
    inner, hidden = first.gate_proj.weight.shape
    like = dict(dtype=first.gate_proj.weight.dtype, device=first.gate_proj.weight.device)
    packed = PackedExperts(torch.empty((len(experts), 2 * inner, hidden), **like),
                           torch.empty((len(experts), hidden, inner), **like))
    probe = torch.zeros((1, hidden), **like)
    try:
        packed(probe, torch.ones(len(experts), dtype=torch.int32, device=probe.device))
    except (RuntimeError, NotImplementedError) as exc:
        log.warning("grouped matmul unavailable for %s experts on %s (%s); using the per-expert loop",
                    like["dtype"], like["device"], exc)
        return None
    with torch.no_grad():
        for e, expert in enumerate(experts):
            packed.gate_up[e, :inner].copy_(expert.gate_proj.weight)
            packed.gate_up[e, inner:].copy_(expert.up_proj.weight)
            packed.down[e].copy_(expert.down_proj.weight)
            expert.gate_proj.weight = nn.Parameter(packed.gate_up[e, :inner], requires_grad=False)
            expert.up_proj.weight = nn.Parameter(packed.gate_up[e, inner:], requires_grad=False)
            expert.down_proj.weight = nn.Parameter(packed.down[e], requires_grad=False)
    return packed
