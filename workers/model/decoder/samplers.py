"""The two flow-matching samplers of the official decoder (docs/model.md §5.4) — [VERIFIED] there.

Convention: x_t = t·x_data + (1−t)·noise (t = 0 noise, t = 1 data); `velocity(x, t)` predicts x_data − noise.
Both samplers check `should_cancel()` before every model call and report `progress("decode", k, total)`
after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from workers.model.errors import Cancelled
from workers.model.hooks import Progress, ShouldCancel

Velocity = Callable[[torch.Tensor, float], torch.Tensor]

STAGE = "decode"
# §5.4 normal: the reference warps the uniform grid with time_shifting_factor 6: t' = t / (t + 6 − 6t).
TIME_SHIFT = 6.0


def _check_cancel(should_cancel: ShouldCancel | None) -> None:
    if should_cancel is not None and should_cancel():
        raise Cancelled("decode cancelled")


def normal_time_grid(steps: int) -> torch.Tensor:
    """`steps` points from 0 to 1, shifted towards the noise end (fp32, as the reference)."""
    t = torch.linspace(0.0, 1.0, steps, dtype=torch.float32)
    return t / (t + TIME_SHIFT - TIME_SHIFT * t)


def sample_normal(
    velocity: Velocity,
    noise: torch.Tensor,
    steps: int,
    *,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> torch.Tensor:
    """Euler ODE on the shifted grid: N−1 model calls at t'[0..N−2]; fp32 state (§5.4 normal)."""
    grid = normal_time_grid(steps).tolist()
    x = noise.to(torch.float32)
    total = steps - 1
    for k in range(total):
        _check_cancel(should_cancel)
        t, t_next = grid[k], grid[k + 1]
        v = velocity(x, t).to(torch.float32)
        # dt in fp32 like the reference's time tensor, then the Euler update in the fp32 state.
        dt = torch.tensor(t_next, dtype=torch.float32) - torch.tensor(t, dtype=torch.float32)
        x = x + dt.to(x.device) * v
        if progress is not None:
            progress(STAGE, k + 1, total)
    return x


def turbo_time_grid(steps: int) -> torch.Tensor:
    """`steps + 1` uniform points from 0 to 1 (no shift: `time_shifting_factor` is ignored in turbo)."""
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def sample_turbo(
    velocity: Velocity,
    noise: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    *,
    renoise: Sequence[torch.Tensor] | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> torch.Tensor:
    """Distilled CFG-free sampler: predict x_data, re-noise with fresh noise at t_next; float64 state.

    Fresh noise is drawn from `generator` at every step, including the last, where it is multiplied by 0
    (t_next = 1): drawing it anyway keeps a seeded random stream aligned with the reference (§5.4 turbo 3).
    `renoise` supplies those `steps` draws instead (to compare implementations step by step).
    """
    if (generator is None) == (renoise is None):
        raise ValueError("sample_turbo needs exactly one of generator and renoise")
    if renoise is not None and len(renoise) != steps:
        raise ValueError(f"renoise holds {len(renoise)} draws for {steps} steps")
    grid = turbo_time_grid(steps).tolist()
    x = noise.to(torch.float64)
    for k in range(steps):
        _check_cancel(should_cancel)
        t, t_next = grid[k], grid[k + 1]
        v = velocity(x, t).to(torch.float64)
        x_data = x + (1.0 - t) * v
        if renoise is not None:
            fresh = renoise[k].to(device=x.device, dtype=torch.float64)
        else:
            fresh = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=x.device)
        x = t_next * x_data + (1.0 - t_next) * fresh  # = x_data exactly at the last step
        if progress is not None:
            progress(STAGE, k + 1, steps)
    return x
