"""One denoising step for every active request, with a single batched backbone forward.

The engine may add or remove `RequestState`s between calls; nothing here depends on which other requests
share the batch (each request samples with its own generator, and padding is masked out).
"""

from __future__ import annotations

import torch

from workers.model.sampler import sprint as sprint_ops
from workers.model.sampler.advance import advance_group, sampling_settings
from workers.model.sampler.batch import BatchInput, assemble
from workers.model.sampler.state import RequestState


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of the backbone's weights; the additive mask uses it."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


@torch.no_grad()
def step(model: torch.nn.Module, states: list[RequestState]) -> None:
    """Advance every request that is not done by one denoising step.

    Requests that run their whole window and requests that run only their active block over a SPRINT
    prefix cache go through separate forwards: padded into one, every cached row would run the whole
    window's queries (plus its cached keys), costing more than the two forwards together.
    """
    active = [s for s in states if not s.done]
    for group in ([s for s in active if not s.uses_cache()], [s for s in active if s.uses_cache()]):
        if group:
            _forward(model, group)


def _forward(model: torch.nn.Module, states: list[RequestState]) -> None:
    """One batched backbone forward for `states`, then the token choice of each group that samples alike."""
    groups: dict[tuple, list[RequestState]] = {}
    for st in states:
        groups.setdefault(sampling_settings(st), []).append(st)
    active = [st for group in groups.values() for st in group]  # a group's rows are contiguous in the batch
    rows = [st.row_input(r) for st in active for r in range(st.num_rows)]
    batch = assemble(rows, dtype=model_dtype(model), pad_id=active[0].request.mask_id)
    capturing = [sprint_ops.captures_now(st.sprint, st.step_in_block, st.uses_cache()) for st in active]
    importance = any(cap and st.sprint.prunes for st, cap in zip(active, capturing))
    # §3.6 importance (a choice, see sprint.py): the mass each key gets from the row's own active block.
    block_queries = [st.block_length for st in active for _ in range(st.num_rows)] if importance else 0
    out = model(
        batch.input_ids,
        batch.position_ids,
        batch.attention_mask,
        past_key_values=batch.past_key_values,
        use_cache=any(capturing),
        logits_to_keep=max(st.block_length for st in active),
        key_importance=importance,
        importance_queries=block_queries,
    )
    base = 0
    for st, cap in zip(active, capturing):
        if cap:
            _capture_prefix(st, out, batch, base)
        base += st.num_rows
    base = 0
    for group in groups.values():
        count = sum(st.num_rows for st in group)
        advance_group(group, out.logits[base : base + count])
        base += count


def _capture_prefix(st: RequestState, out, batch: BatchInput, base: int) -> None:
    """Keep (a pruned part of) each row's prefix KV from this full forward as the SPRINT cache."""
    end, start = st.window_end, st.block_start
    cache = []
    for r in range(st.num_rows):
        pad = min(st.pads[r], start)
        columns = slice(batch.column_of(end, pad), batch.column_of(end, start))
        importance = None if out.key_importance is None else out.key_importance[base + r, columns]
        keep = sprint_ops.keep_indices(
            st.sprint,
            importance,
            st.confidence[pad:start],
            st.x[r, pad:start],
            st.request.image_token_offset,
        )
        cache.append(sprint_ops.prefix_cache(out.past_key_values, base + r, columns, keep))
    st.cache = cache
