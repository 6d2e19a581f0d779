"""One denoising step's token choice for a group of requests, as tensor ops over the whole group
(docs/model.md §3.1 step 4, §3.2 guidance, §3.6 ranking and adaptive counts).

Requests that sample alike (`sampling_settings`) are guided, filtered, sampled, ranked and selected together:
a handful of ops per group rather than per request. Every op works row by row (per position over the
vocabulary, per request over its block), and a request with a temperature draws from its own generator, so
a request's tokens do not depend on the rest of its group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from workers.model.sampler import sprint as sprint_ops
from workers.model.sampler.acceptance import select_transfer_rows
from workers.model.sampler.batch import stack_rows
from workers.model.sampler.guidance import guided_logits, restrict_to_images
from workers.model.sampler.sampling import confidence_scores, sample_tokens

if TYPE_CHECKING:
    from workers.model.sampler.state import RequestState


def sampling_settings(st: RequestState) -> tuple:
    """Requests with equal settings share the group's tensor ops (thresholds and counts may differ)."""
    r = st.request
    return (st.num_rows, st.block_length, r.cfg_scale, r.cfg_image_scale, r.cfg_rescale,
            r.image_token_offset if r.image_only else None, r.temperature, r.top_k, r.top_p,
            None if st.sprint is None else st.sprint.remasking)


def advance_group(states: list[RequestState], row_logits: torch.Tensor) -> None:
    """Apply one step to `states` (equal `sampling_settings`) given their rows' logits, [N·R, ≥B, V] in
    request order (the last B positions are the active block)."""
    first, req = states[0], states[0].request
    n, rows, length = len(states), first.num_rows, first.block_length
    logits = row_logits[:, -length:].reshape(n, rows, length, -1).transpose(0, 1)  # [R, N, B, V]
    guided = guided_logits(logits, cfg_scale=req.cfg_scale, cfg_image_scale=req.cfg_image_scale,
                           cfg_rescale=req.cfg_rescale)
    if req.image_only:
        guided = restrict_to_images(guided, req.image_token_offset)
    tokens, token_probs, probs = _sample(states, guided)

    masked = stack_rows([st.unfilled[st.block_start : st.window_end] for st in states])
    if first.sprint is None:
        counts = [st.schedule[st.step_in_block] for st in states]
        scores = token_probs
    else:
        remaining = masked.sum(-1).tolist()
        counts = [sprint_ops.unmask_count(st.sprint, st.schedule, st.step_in_block, left)
                  for st, left in zip(states, remaining)]
        scores = confidence_scores(first.sprint.remasking, token_probs, probs)
    chosen = select_transfer_rows(scores, token_probs, masked, counts, [st.request.threshold for st in states])
    block_open = (masked & ~chosen).any(-1).tolist()
    for i, st in enumerate(states):
        st.apply(tokens[i], token_probs[i], chosen[i], block_open=block_open[i])


def _sample(states: list[RequestState], guided: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, their probabilities [N, B] and the filtered distributions [N, B, V]; greedy in one call,
    sampling per request with the request's own generator."""
    req = states[0].request
    options = dict(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
    if req.temperature <= 0:
        return sample_tokens(guided, generator=None, **options)
    drawn = [sample_tokens(guided[i], generator=st.generator, **options) for i, st in enumerate(states)]
    return tuple(torch.stack(parts) for parts in zip(*drawn))
