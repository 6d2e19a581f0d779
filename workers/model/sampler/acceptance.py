"""Which masked positions of the active block receive their sampled token this step (docs/model.md §3.1 4a)."""

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
    return select_transfer_rows(scores[None], token_probs[None], masked[None], [count], [threshold])[0]


def select_transfer_rows(
    scores: torch.Tensor,
    token_probs: torch.Tensor,
    masked: torch.Tensor,
    counts: list[int],
    thresholds: list[float],
) -> torch.Tensor:
    """`select_transfer` for N requests at once: [N, B] inputs, one count and threshold per row → bool [N, B].

    One host read for the whole batch; rows that fall back to the top-k share one `topk` per distinct k
    (a row's top-k does not depend on the other rows, so the choice is the same alone or batched).
    """
    if len(set(thresholds)) == 1:
        limit = thresholds[0]  # a Python float is compared in the probabilities' fp32, as the tensor below
    else:
        limit = torch.tensor(thresholds, dtype=token_probs.dtype, device=token_probs.device)[:, None]
    above = masked & (token_probs > limit)
    n_above, n_masked = torch.stack((above.sum(-1), masked.sum(-1))).tolist()
    by_k: dict[int, list[int]] = {}
    for row, (count, hits, open_) in enumerate(zip(counts, n_above, n_masked)):
        k = min(count, open_)
        if hits < count and k > 0:
            by_k.setdefault(k, []).append(row)
    if not by_k:
        return above  # every row accepts its confident positions (with k = 0 those are none)
    ranked = scores.float().masked_fill(~masked, float("-inf"))
    if list(by_k.values()) == [list(range(len(counts)))]:  # every row takes its top k (requests in lockstep)
        (k,) = by_k
        return torch.zeros_like(masked).scatter_(-1, torch.topk(ranked, k).indices, True)
    chosen = above.clone()
    for k, rows in by_k.items():
        index = torch.tensor(rows, device=masked.device)
        top = torch.topk(ranked.index_select(0, index), k).indices
        chosen[index] = torch.zeros((len(rows), masked.shape[-1]), dtype=torch.bool,
                                    device=masked.device).scatter_(1, top, True)
    return chosen
