"""Block layout and the per-block transfer schedule of the baseline loop (docs/model.md §3.1 steps 1 and 3)."""

from __future__ import annotations

import math


def effective_steps(steps: int, gen_length: int, minimal_topk: int) -> int:
    """§3.1 step 1: S <- min(S, G // minimal_topk).

    When G < minimal_topk the reference would get 0 steps and never write a token; we keep at least one
    step so the request still completes (a choice, not in the spec).
    """
    return max(1, min(steps, gen_length // minimal_topk))


def block_count(prompt_length: int, gen_length: int, block_length: int) -> int:
    """§3.1 step 1: nb = ceil((P + G) / B); the sequence is nb * B long."""
    return math.ceil((prompt_length + gen_length) / block_length)


def transfer_schedule(block_length: int, steps: int) -> list[int]:
    """§3.1 step 3: S entries of B // S, the first B mod S of them one larger (sums to B)."""
    base, extra = divmod(block_length, steps)
    return [base + (1 if s < extra else 0) for s in range(steps)]


def adaptive_count(remaining: int, steps_left: int) -> int:
    """SPRINT adaptive unmasking (§3.6): k = ceil(remaining / steps_left); the last step takes all."""
    return math.ceil(remaining / max(1, steps_left))
