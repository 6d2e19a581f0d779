"""Which masked positions of the active block receive their sampled token this step (MODEL_SPEC §3.1 4a)."""

from __future__ import annotations

import torch


def select_transfer(
    scores: torch.Tensor,
    token_probs: torch.Tensor,
    masked: torch.Tensor,
    count: int,
    threshold: float,
) -> torch.Tensor:
    """Return a bool [B] of positions to write.

    If at least `count` masked positions have probability > `threshold`, accept all of them; otherwise
    accept the `count` masked positions with the highest `scores` (the baseline ranks by probability, so
    `scores` is `token_probs` there; SPRINT may rank by another strategy). Never more than are masked:
    the reference's top-k may pick unmasked positions, but writing those is a no-op.
    """
    neg_inf = torch.tensor(float("-inf"), device=scores.device)
    above = masked & (token_probs > threshold)
    if int(above.sum()) >= count:
        return above
    count = min(count, int(masked.sum()))
    chosen = torch.zeros_like(masked)
    if count > 0:
        ranked = torch.where(masked, scores.float(), neg_inf)
        chosen[torch.topk(ranked, count).indices] = True
    return chosen
