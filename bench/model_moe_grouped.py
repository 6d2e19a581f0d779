"""Grouped expert compute vs a per-expert Python loop (the baseline) at 256 tokens x 16 experts (docs/model.md §2.2).

Variants, all on the same router output, outputs checked equal:
- per-token loop: what ARCHITECTURE §4 forbids;
- per-expert loop (baseline): each expert looks its tokens up with `where(ids == e)` and scatters after itself
  (the layout of the reference `moe_infer`-style loops);
- sorted loop: the backbone's `MoE.routed` with unpacked experts: (token, slot) pairs sorted by expert, one
  SwiGLU per expert over its contiguous slice, one scatter back (one host sync to count tokens per expert);
- grouped matmul: `MoE.routed` after `pack_experts()`, as the loader leaves it: two `grouped_mm` calls over the
  stacked expert weights, no loop and no host sync (on a CPU torch loops over the groups in C++).

Two expert shapes: the official model's (hidden 2048 -> 512 SwiGLU; on a CPU the matmuls dominate) and small
ones (256 -> 64; dispatch overhead dominates, as it does for the official shapes on a GPU). 16 experts in 4
groups, top-2 groups, 4 experts per token; same router output for every variant, outputs checked equal.
CPU fp32, one thread.

    .venv/bin/python bench/model_moe_grouped.py
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch
from model_common import interleaved_medians, one_thread, tiny_checkpoint

TOKENS = 256
ROUTING = {"num_experts": 16, "n_group": 4, "topk_group": 2, "num_experts_per_tok": 4}
# The official expert shapes (compute-bound on a CPU) and small ones (dispatch-bound, as on a GPU).
SHAPES = {"official experts": {"hidden_size": 2048, "moe_intermediate_size": 512},
          "small experts": {"hidden_size": 256, "moe_intermediate_size": 64}}
REPEATS = 5


def per_expert_loop(moe, flat: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(flat.shape, dtype=torch.float32)
    for expert_id, expert in enumerate(moe.experts):
        token_idx, slot = torch.where(ids == expert_id)
        if token_idx.numel():
            out.index_add_(0, token_idx, expert(flat[token_idx]).float() * weights[token_idx, slot, None])
    return out


def per_token_loop(moe, flat: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(flat.shape, dtype=torch.float32)
    for t in range(flat.shape[0]):
        for k in range(ids.shape[1]):
            out[t] += weights[t, k] * moe.experts[int(ids[t, k])](flat[t : t + 1])[0].float()
    return out


def measure(base_cfg, shape: dict) -> tuple[dict[str, float], object]:
    from workers.model.backbone.moe import MoE

    cfg = dataclasses.replace(base_cfg, **ROUTING, **shape)
    torch.manual_seed(0)
    moe = MoE(cfg).eval()
    with torch.no_grad():
        for tensor in moe.parameters():
            tensor.normal_(0.0, 0.02)
        moe.gate.expert_bias.normal_(0.0, 0.1)
    packed = MoE(cfg).eval()
    packed.load_state_dict(moe.state_dict())
    assert packed.pack_experts(), "no grouped matmul for these shapes on this device"
    flat = torch.randn(TOKENS, cfg.hidden_size)
    with torch.inference_mode():
        ids, weights = moe.gate(flat)
        grouped = packed.routed(flat, ids, weights)
        for other in (per_expert_loop, per_token_loop):
            torch.testing.assert_close(other(moe, flat, ids, weights), grouped, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(moe.routed(flat, ids, weights), grouped, rtol=1e-4, atol=1e-5)
        medians = interleaved_medians({
            "per-token loop": lambda: per_token_loop(moe, flat, ids, weights),
            "per-expert loop": lambda: per_expert_loop(moe, flat, ids, weights),
            "sorted loop": lambda: moe.routed(flat, ids, weights),
            "grouped matmul": lambda: packed.routed(flat, ids, weights),
        }, REPEATS)
    return medians, cfg


def main() -> None:
    from workers.model.config import BackboneConfig

    one_thread()
    with tempfile.TemporaryDirectory(prefix="llada-bench-") as tmp:
        folder = tiny_checkpoint(Path(tmp) / "ckpt", with_image_components=False)
        base_cfg = BackboneConfig.from_file(folder / "config.json")
    for title, shape in SHAPES.items():
        medians, cfg = measure(base_cfg, shape)
        print(f"{title}: {TOKENS} tokens x {cfg.num_experts} experts, top-{cfg.num_experts_per_tok}, "
              f"SwiGLU {cfg.hidden_size} -> {cfg.moe_intermediate_size}")
        for name, seconds in medians.items():
            print(f"  {name:>15}: {seconds * 1000:8.2f} ms  ({medians['per-expert loop'] / seconds:5.2f}x the "
                  "per-expert loop)")
        print(f"  grouped matmul is {medians['per-expert loop'] / medians['grouped matmul']:.2f}x the per-expert "
              f"loop (baseline) and {medians['per-token loop'] / medians['grouped matmul']:.1f}x the per-token loop")

if __name__ == "__main__":
    main()
