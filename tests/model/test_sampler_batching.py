"""The sampler's per-step work done for a whole batch at once equals the per-request formulas it replaced:
the acceptance choice, the batch's attention mask, and a group's token choice vs each request alone."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.model.test_sampler_doubles import (  # noqa: F401 (single_torch_thread: autouse fixture)
    EOS_ID, IMAGE_OFFSET, MASK_ID, PAD_FREE_IDS, VOCAB, single_torch_thread,
)

from workers.model.sampler import GenerationRequest, SprintOptions, start_request
from workers.model.sampler.acceptance import select_transfer_rows
from workers.model.sampler.advance import advance_group, sampling_settings
from workers.model.sampler.batch import RowInput, assemble


def select_transfer_one(scores, token_probs, masked, count, threshold):
    """The per-request acceptance formula (docs/model.md §3.1 step 4a) as it was written for one row."""
    above = masked & (token_probs > threshold)
    if int(above.sum()) >= count:
        return above
    count = min(count, int(masked.sum()))
    chosen = torch.zeros_like(masked)
    if count > 0:
        ranked = torch.where(masked, scores.float(), torch.tensor(float("-inf")))
        chosen[torch.topk(ranked, count).indices] = True
    return chosen


def test_batched_acceptance_equals_the_per_row_formula_ties_included():
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        n, length = 1 + trial % 7, 16
        probs = torch.randint(0, 5, (n, length), generator=gen).float() / 4  # many exact ties, some 1.0
        scores = probs if trial % 2 else torch.rand((n, length), generator=gen)
        masked = torch.rand((n, length), generator=gen) < 0.6
        counts = torch.randint(0, 6, (n,), generator=gen).tolist()
        thresholds = [[0.5, 0.95, 1.0, 0.1][(trial + i) % 4] for i in range(n)]
        batched = select_transfer_rows(scores, probs, masked, counts, thresholds)
        for i in range(n):
            assert torch.equal(batched[i], select_transfer_one(scores[i], probs[i], masked[i], counts[i],
                                                               thresholds[i])), (trial, i)


def visibility_one(row: RowInput) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row visibility as it was built before (own coordinates): over its past, over its queries."""
    q = int(row.ids.shape[0])
    own = torch.arange(row.start, row.start + q)
    block = own // row.block_length
    real = own >= row.pad
    current = (block[None, :] <= block[:, None]) & real[:, None] & real[None, :]
    return real[:, None].expand(-1, row.past_length), current


def past(length):
    return [(torch.randn(1, length, 4), torch.randn(1, length, 4)) for _ in range(2)]


def row(q, start=0, pad=0, block=8, past_length=0):
    return RowInput(torch.arange(q), torch.arange(q), start=start, pad=pad, block_length=block,
                    past=past(past_length) if past_length else None)


ROW_SETS = {
    "padded": [row(24), row(16, pad=5), row(8, start=16, past_length=11), row(8, start=8, pad=10, past_length=3),
               row(12, block=4)],  # whole windows, CFG pad, cached, a pad inside the block, other blocks
    "unpadded windows": [row(24), row(24, block=4)],
    "unpadded cached": [row(8, start=16, past_length=11), row(8, start=24, past_length=5)],
}


@pytest.mark.parametrize("name", ROW_SETS)
def test_the_batch_mask_equals_each_rows_own_visibility_left_padded(name):
    rows = ROW_SETS[name]
    batch = assemble(rows, dtype=torch.float32, pad_id=MASK_ID)
    q_max, p_max = batch.query_length, batch.past_length
    assert q_max == max(int(r.ids.shape[0]) for r in rows) and p_max == max(r.past_length for r in rows)
    visible = ~torch.isneginf(batch.attention_mask[:, 0])
    for i, row_input in enumerate(rows):
        q, p = int(row_input.ids.shape[0]), row_input.past_length
        expected = torch.zeros((q_max, p_max + q_max), dtype=torch.bool)
        sees_past, sees_current = visibility_one(row_input)
        expected[q_max - q :, p_max - p : p_max] = sees_past
        expected[q_max - q :, p_max + q_max - q :] = sees_current
        blind = ~expected.any(-1)  # padding queries see themselves only
        expected[torch.arange(q_max)[blind], p_max + torch.arange(q_max)[blind]] = True
        assert torch.equal(visible[i], expected), i
        assert batch.input_ids[i, q_max - q :].tolist() == row_input.ids.tolist()
        if p:
            assert torch.equal(batch.past_key_values[1][0][i, :, p_max - p :], row_input.past[1][0])


def request(prompt, **overrides):
    fields = dict(prompts=[prompt], gen_length=16, block_length=8, steps=4, mask_id=MASK_ID, eos_id=EOS_ID,
                  threshold=0.6)
    fields.update(overrides)
    return GenerationRequest(**fields)


SAMPLED = dict(temperature=0.8, top_k=20, top_p=0.9)
GROUPS = {
    "greedy": [request(PAD_FREE_IDS[:5]), request(PAD_FREE_IDS[3:12], threshold=1.0),
               request(PAD_FREE_IDS[:2], gen_length=30, threshold=0.2)],
    "sampled": [request(PAD_FREE_IDS[:5], seed=1, **SAMPLED), request(PAD_FREE_IDS[:7], seed=2, **SAMPLED)],
    "cfg images": [request(PAD_FREE_IDS[:9], prompts=[PAD_FREE_IDS[:9], PAD_FREE_IDS[20:23]], cfg_scale=3.0,
                           image_only=True, image_token_offset=IMAGE_OFFSET, threshold=0.3)] * 2,
    "sprint margin": [request(PAD_FREE_IDS[:n], sprint=SprintOptions(remasking="top_k_margin"))
                      for n in (4, 6, 11)],
}


@pytest.mark.parametrize("name", GROUPS)
def test_a_group_steps_exactly_as_each_request_alone(name):
    gen = torch.Generator().manual_seed(3)
    together = [start_request(r) for r in GROUPS[name]]
    alone = copy.deepcopy(together)
    assert len({sampling_settings(st) for st in together}) == 1
    rows = together[0].num_rows
    for _ in range(6):
        live = [i for i, st in enumerate(together) if not st.done]
        if not live:
            break
        logits = torch.randn(len(live) * rows, 8, VOCAB, generator=gen) * 3
        advance_group([together[i] for i in live], logits)
        for k, i in enumerate(live):
            advance_group([alone[i]], logits[k * rows : (k + 1) * rows])
        for a, b in zip(together, alone):
            assert torch.equal(a.x, b.x) and torch.equal(a.unfilled, b.unfilled)
            assert torch.equal(a.confidence, b.confidence)
            assert (a.block, a.step_in_block, a.done) == (b.block, b.step_in_block, b.done)
