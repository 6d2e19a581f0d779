"""Packing the rows of many requests into one backbone forward (left padding + additive masks).

Every row brings its own query tokens, position ids, an optional cached past KV and a bool visibility
matrix over [its past ; its queries]. Rows are left-padded to the longest query and the longest past; the
additive mask (0 visible, -inf blocked) hides every padding column from every query. A query that sees no
key at all (batch or CFG padding) is allowed its own column, so softmax stays finite; no real query ever
sees a padding column, so real rows are unaffected by what padding rows compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RowInput:
    ids: torch.Tensor  # Long[q]
    positions: torch.Tensor  # Long[q]
    visible_current: torch.Tensor  # Bool[q, q]
    visible_past: torch.Tensor  # Bool[q, p]
    past: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer ([h, p, d], [h, p, d]); None = p 0


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


def block_visibility(window_end: int, block_length: int, pad: int, device: torch.device) -> torch.Tensor:
    """Own-coordinate visibility over [0, window_end): block-causal (MODEL_SPEC §3.1 step 2), pads hidden.

    A token in block b sees every token in blocks <= b. The first `pad` columns are CFG left padding
    (§3.2): no query sees them, and they see nothing themselves.
    """
    block = torch.arange(window_end, device=device) // block_length
    visible = block[None, :] <= block[:, None]
    visible[:, :pad] = False
    visible[:pad, :] = False
    return visible


def assemble(rows: list[RowInput], *, dtype: torch.dtype, pad_id: int) -> BatchInput:
    device = rows[0].ids.device
    n = len(rows)
    q_max = max(int(r.ids.shape[0]) for r in rows)
    p_lens = [0 if r.past is None else int(r.past[0][0].shape[-2]) for r in rows]
    p_max = max(p_lens)
    k_total = p_max + q_max

    input_ids = torch.full((n, q_max), pad_id, dtype=torch.long, device=device)
    position_ids = torch.zeros((n, q_max), dtype=torch.long, device=device)
    visible = torch.zeros((n, q_max, k_total), dtype=torch.bool, device=device)
    for i, row in enumerate(rows):
        q, p = int(row.ids.shape[0]), p_lens[i]
        input_ids[i, q_max - q :] = row.ids
        position_ids[i, q_max - q :] = row.positions
        visible[i, q_max - q :, k_total - q :] = row.visible_current
        if p:
            visible[i, q_max - q :, p_max - p : p_max] = row.visible_past
    # Queries that see nothing (padding) see themselves, keeping every softmax finite.
    blind = ~visible.any(dim=-1)
    diag = torch.arange(q_max, device=device)
    visible[:, diag, p_max + diag] |= blind
    mask = torch.zeros((n, 1, q_max, k_total), dtype=dtype, device=device)
    mask.masked_fill_(~visible.unsqueeze(1), float("-inf"))

    past = None
    if p_max and all(p == p_max for p in p_lens):
        # Common case (one request, or rows with equal prefixes): no padding, one stack per layer.
        layers = zip(*(row.past for row in rows))
        past = [(torch.stack([k for k, _ in per_row]), torch.stack([v for _, v in per_row])) for per_row in layers]
    elif p_max:
        template = next(r.past for r in rows if r.past is not None)
        past = []
        for layer, (k0, v0) in enumerate(template):
            k = k0.new_zeros((n, k0.shape[0], p_max, k0.shape[-1]))
            v = v0.new_zeros((n, v0.shape[0], p_max, v0.shape[-1]))
            for i, row in enumerate(rows):
                if p_lens[i]:
                    k[i, :, p_max - p_lens[i] :] = row.past[layer][0]
                    v[i, :, p_max - p_lens[i] :] = row.past[layer][1]
            past.append((k, v))
    return BatchInput(input_ids, position_ids, mask, past, q_max, p_max)
