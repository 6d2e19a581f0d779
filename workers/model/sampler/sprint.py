"""SPRINT (docs/model.md §3.6): prefix KV reuse, prefix pruning and adaptive unmasking.

Only README-level behaviour is public (§3.6, open question 1), so every detail below is a documented
choice:
* Warm-up is per block: the first `cache_warmup_steps` steps of every block run the whole prefix (as the
  baseline does); the last warm-up step also returns the KV, and the prefix part of it (everything before
  the active block, CFG pads excluded) becomes the row's cache for the block's remaining steps. The prefix
  cannot change inside a block and only sees itself under the block-causal mask, so reuse is exact when
  nothing is pruned. A new block warms up again because its prefix has grown by the finished block.
* Pruning is decided once per block, at that capture step, per row (see `keep_indices`).
"""

from __future__ import annotations

import math

import torch

from workers.model.sampler.request import SprintOptions
from workers.model.sampler.schedule import adaptive_count

# §3.6 [UNVERIFIED] importance formula. Chosen: score = (1 - alpha) * attention + alpha * confidence, where
# attention = the backbone's `key_importance` (probability mass the key receives from the active block's
# queries of the capture step — the queries that will read the cache, as SnapKV scores a prompt's KV by its
# last queries — averaged over layers and heads; the stepper asks for it with `importance_queries`, which
# keeps the fused attention for the forward and costs an explicit softmax over block x window only) divided
# by the row's largest prefix value, so both terms lie in [0, 1];
# confidence = the probability with which a generated token was accepted, and 1 for prompt tokens (given,
# not guessed). alpha = `confidence_alpha` (sglang default 0.5).
PROMPT_TOKEN_CONFIDENCE = 1.0


def warmup_steps(sprint: SprintOptions) -> int:
    """Full-prefix steps per block. §3.6: the cache is computed during the warm-up steps, so there is at
    least one; `cache_warmup_steps=0` (accepted by the service) therefore behaves like 1."""
    return max(1, sprint.cache_warmup_steps)


def captures_now(sprint: SprintOptions | None, step_in_block: int, has_cache: bool) -> bool:
    """Whether this step is the last warm-up step of the block, whose KV becomes the prefix cache."""
    return sprint is not None and not has_cache and step_in_block == warmup_steps(sprint) - 1


def unmask_count(sprint: SprintOptions, schedule: list[int], step_in_block: int, remaining: int) -> int:
    """How many positions to unmask this step: adaptive k = ceil(remaining / steps_left) (§3.6), or the
    baseline schedule when adaptive unmasking is off."""
    if not sprint.adaptive_unmasking:
        return schedule[step_in_block]
    return adaptive_count(remaining, len(schedule) - step_in_block)


def keep_indices(
    sprint: SprintOptions,
    importance: torch.Tensor | None,
    confidence: torch.Tensor,
    token_ids: torch.Tensor,
    image_token_offset: int | None,
) -> torch.Tensor | None:
    """Indices (sorted) of the prefix entries to keep, or None to keep everything.

    Per modality (§3.6): image tokens (id >= image_token_offset) keep `image_keep_ratio`, text tokens keep
    `text_keep_ratio`; a ratio left None falls back to `keep_ratio`. Without an image offset everything
    counts as text. ceil(ratio * n) entries are kept per modality, the highest scores first.
    """
    if not sprint.prunes or importance is None or token_ids.numel() == 0:
        return None
    attention = importance.float()
    top = attention.max()
    if top > 0:
        attention = attention / top
    alpha = sprint.confidence_alpha
    score = (1.0 - alpha) * attention + alpha * confidence.float()

    is_image = torch.zeros_like(token_ids, dtype=torch.bool)
    if image_token_offset is not None:
        is_image = token_ids >= image_token_offset
    kept = []
    for members, ratio in ((is_image, sprint.image_keep_ratio), (~is_image, sprint.text_keep_ratio)):
        ratio = sprint.keep_ratio if ratio is None else ratio
        where = members.nonzero().squeeze(-1)
        keep = math.ceil(ratio * where.numel())
        if keep:
            kept.append(where[torch.topk(score[where], keep).indices])
    return torch.sort(torch.cat(kept)).values


def prefix_cache(
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    batch_row: int,
    columns: slice,
    keep: torch.Tensor | None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copy one row's prefix KV out of a batched forward's cache (so the batch tensors can be freed)."""
    out = []
    for k, v in kv:
        k_row, v_row = k[batch_row, :, columns], v[batch_row, :, columns]
        if keep is not None:
            k_row, v_row = k_row[:, keep], v_row[:, keep]
        out.append((k_row.contiguous(), v_row.contiguous()))
    return out
