"""Packing the rows of many requests into one backbone forward (left padding + additive masks).

Every row brings its own query tokens, position ids, an optional cached past KV and the few numbers that
fix what its queries may see (`RowInput`). Rows are left-padded to the longest query and the longest past;
the visibility of the whole batch is computed at once from those numbers (`batch_visibility`), and the
additive mask (0 visible, -inf blocked) hides every padding column from every query. A query that sees no
key at all (batch or CFG padding) is allowed its own column, so softmax stays finite; no real query ever
sees a padding column, so real rows are unaffected by what padding rows compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowInput:
    ids: torch.Tensor  # Long[q]: the row's tokens at own positions start .. start+q-1
    positions: torch.Tensor  # Long[q]
    start: int  # own coordinate of the first query
    pad: int  # CFG left padding: own positions below it are hidden from every query and see nothing
    block_length: int
    past: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer ([h, p, d], [h, p, d]); None = p 0

    @property
    def past_length(self) -> int:
        return 0 if self.past is None else int(self.past[0][0].shape[-2])


@dataclass
class BatchInput:
    input_ids: torch.Tensor  # Long[N, Q]
    position_ids: torch.Tensor  # Long[N, Q]
    attention_mask: torch.Tensor  # [N, 1, Q, P + Q] additive
    past_key_values: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer [N, h, P, d]
    query_length: int  # Q
    past_length: int  # P

    def column_of(self, row_query_length: int, own_column: int) -> int:
        """Key column in the batch of a row's own query column (for reading KV / importance back)."""
        return self.past_length + self.query_length - row_query_length + own_column


def batch_visibility(rows: list[RowInput], query_length: int, past_length: int, device) -> torch.Tensor:
    """Bool [N, Q, P + Q]: which key each query may attend to, for every row at once.

    Within a row's queries (own positions a, b): block-causal, b // block <= a // block (docs/model.md §3.1
    step 2), neither below the row's CFG pad. A cached past (SPRINT: the prefix before the active block,
    pads excluded) is seen whole by every real query. Left padding (short queries, short pasts) is hidden,
    and a query that sees no key (padding) sees its own column only, keeping its softmax finite.
    """
    geometry = torch.tensor(
        [[query_length - int(r.ids.shape[0]), past_length - r.past_length, r.start, r.pad, r.block_length]
         for r in rows], dtype=torch.long, device=device)
    query_pad, past_pad, start, pad, block = geometry.unbind(1)
    own = torch.arange(query_length, device=device)[None, :] - query_pad[:, None]  # [N, Q]; < 0: padding
    position = start[:, None] + own
    block_of = torch.div(position, block[:, None], rounding_mode="floor")
    # Padding (left padding of short rows, CFG pads) is known from the numbers: the usual batch has none.
    padded = any(int(r.ids.shape[0]) < query_length or r.pad > r.start for r in rows)
    if padded:
        outside = (own < 0) | (position < pad[:, None])
        # One comparison: a query outside the row gets block -1, a key outside it a block past any query's.
        queries = block_of.masked_fill(outside, -1)
        keys = block_of.masked_fill(outside, torch.iinfo(torch.long).max)
        current = (keys[:, None, :] <= queries[:, :, None]) | torch.diag_embed(outside)
    else:
        current = block_of[:, None, :] <= block_of[:, :, None]
    if not past_length:
        return current
    cached = torch.arange(past_length, device=device)[None, :] >= past_pad[:, None]  # [N, P]
    past = ~outside[:, :, None] & cached[:, None, :] if padded else cached[:, None, :].expand(-1, query_length, -1)
    return torch.cat((past, current), dim=-1)


def assemble(rows: list[RowInput], *, dtype: torch.dtype, pad_id: int) -> BatchInput:
    device = rows[0].ids.device
    n = len(rows)
    q_lens = [int(r.ids.shape[0]) for r in rows]
    p_lens = [r.past_length for r in rows]
    q_max, p_max = max(q_lens), max(p_lens)

    if all(q == q_max for q in q_lens):  # common case: rows of requests at the same step of equal prompts
        input_ids = stack_rows([r.ids for r in rows])
        position_ids = stack_rows([r.positions for r in rows])
    else:
        input_ids = torch.full((n, q_max), pad_id, dtype=torch.long, device=device)
        position_ids = torch.zeros((n, q_max), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            input_ids[i, q_max - q_lens[i] :] = row.ids
            position_ids[i, q_max - q_lens[i] :] = row.positions

    visible = batch_visibility(rows, q_max, p_max, device)
    mask = torch.full((n, 1, q_max, p_max + q_max), float("-inf"), dtype=dtype, device=device)
    mask.masked_fill_(visible.unsqueeze(1), 0.0)
    return BatchInput(input_ids, position_ids, mask, _stack_past(rows, p_lens, p_max), q_max, p_max)


def _stack_past(rows: list[RowInput], p_lens: list[int], p_max: int) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer, the rows' cached (k, v) as [N, h, P, d], left-padded with zeros (hidden by the mask)."""
    if not p_max:
        return None
    if all(p == p_max for p in p_lens):
        # Common case (one request, or rows with equal prefixes): no padding, one stack per layer.
        layers = zip(*(row.past for row in rows))
        return [(stack_rows([k for k, _ in per_row]), stack_rows([v for _, v in per_row])) for per_row in layers]
    template = next(r.past for r in rows if r.past is not None)
    past = []
    for layer, (k0, v0) in enumerate(template):
        k = k0.new_zeros((len(rows), k0.shape[0], p_max, k0.shape[-1]))
        v = v0.new_zeros((len(rows), v0.shape[0], p_max, v0.shape[-1]))
        for i, row in enumerate(rows):
            if p_lens[i]:
                k[i, :, p_max - p_lens[i] :] = row.past[layer][0]
                v[i, :, p_max - p_lens[i] :] = row.past[layer][1]
        past.append((k, v))
    return past


def stack_rows(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack, but a lone tensor becomes a view (a request alone pays no copy of its ids or cache)."""
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)
