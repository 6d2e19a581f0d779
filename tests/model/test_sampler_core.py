"""The baseline block-diffusion loop (docs/model.md §3.1) on the scripted backbone double."""

from __future__ import annotations

import math

import pytest
import torch
from tests.model.test_sampler_doubles import (  # noqa: F401 (single_torch_thread: autouse fixture)
    EOS_ID, IMAGE_OFFSET, MASK_ID, PAD_FREE_IDS, ScriptedBackboneDouble, block_causal_mask,
    single_torch_thread,
)

from workers.model.errors import Cancelled, ModelInputError
from workers.model.sampler import GenerationRequest, generate
from workers.model.sampler.acceptance import select_transfer
from workers.model.sampler.schedule import effective_steps, transfer_schedule


def make_request(prompt_len=5, **overrides) -> GenerationRequest:
    fields = dict(
        prompts=[PAD_FREE_IDS[:prompt_len]],
        gen_length=16,
        block_length=8,
        steps=4,
        mask_id=MASK_ID,
        eos_id=EOS_ID,
    )
    fields.update(overrides)
    return GenerationRequest(**fields)


def reference_generate(model, prompt, gen_length, block_length, steps, threshold):
    """A direct, unbatched transcription of docs/model.md §3.1 (greedy) to compare the sampler against."""
    p = len(prompt)
    nb = math.ceil((p + gen_length) / block_length)
    x = torch.full((nb * block_length,), MASK_ID)
    x[:p] = torch.tensor(prompt)
    mask = block_causal_mask(nb * block_length, block_length)
    pos = torch.arange(nb * block_length)
    schedule = transfer_schedule(block_length, steps)
    for b in range(p // block_length, nb):
        e = (b + 1) * block_length
        for s in range(steps):
            masked = x[e - block_length : e] == MASK_ID
            if not masked.any():
                break
            logits = model(x[None, :e], pos[None, :e], mask[..., :e, :e]).logits[0, -block_length:]
            probs = torch.softmax(logits.float(), -1)
            p_max, x0 = probs.max(-1)
            x0 = torch.where(masked, x0, x[e - block_length : e])
            conf = torch.where(masked, p_max, torch.tensor(float("-inf")))
            high = conf > threshold
            if int(high.sum()) >= schedule[s]:
                chosen = high
            else:
                chosen = torch.zeros_like(high)
                chosen[torch.topk(conf, schedule[s]).indices] = True
            x[e - block_length : e][chosen] = x0[chosen]
        if (x[p:e] == EOS_ID).any():
            break
    gen = x[p : p + gen_length]
    eos = (gen == EOS_ID).nonzero()
    n = int(eos[0, 0]) + 1 if eos.numel() else gen_length
    return gen[:n].tolist()


def test_transfer_schedule_spreads_the_block_over_the_steps():
    assert transfer_schedule(32, 8) == [4] * 8
    assert transfer_schedule(10, 4) == [3, 3, 2, 2]
    assert transfer_schedule(3, 5) == [1, 1, 1, 0, 0]
    assert effective_steps(32, 2048, 1) == 32
    assert effective_steps(32, 10, 2) == 5  # S <- min(S, G // minimal_topk)


def test_acceptance_takes_all_confident_positions_or_the_most_confident_few():
    probs = torch.tensor([0.99, 0.97, 0.50, 0.20, 0.999])
    masked = torch.tensor([True, True, True, True, False])  # the last one is already filled
    many = select_transfer(probs, probs, masked, count=1, threshold=0.95)
    assert many.tolist() == [True, True, False, False, False]  # >= count above tau: all of them
    few = select_transfer(probs, probs, masked, count=3, threshold=0.95)
    assert few.tolist() == [True, True, True, False, False]  # else the 3 most confident masked ones
    capped = select_transfer(probs, probs, masked, count=8, threshold=0.95)
    assert capped.tolist() == [True, True, True, True, False]  # never an already filled position


@pytest.mark.parametrize("prompt_len,gen_length,threshold", [(5, 16, 0.95), (8, 13, 0.3), (11, 20, 1.0)])
def test_greedy_matches_a_direct_transcription_of_the_reference_loop(prompt_len, gen_length, threshold):
    model = ScriptedBackboneDouble(seed=1)
    req = make_request(prompt_len, gen_length=gen_length, threshold=threshold)
    [result] = generate(model, [req])
    expected = reference_generate(model, PAD_FREE_IDS[:prompt_len], gen_length, 8, 4, threshold)
    assert result.ids == expected
    assert len(result.ids) == gen_length and result.finish_reason == "length"
    assert MASK_ID not in result.ids
    assert generate(model, [req])[0].ids == result.ids  # greedy is deterministic


def test_low_threshold_fills_each_block_in_one_step_high_threshold_follows_the_schedule():
    model = ScriptedBackboneDouble()
    generate(model, [make_request(8, gen_length=16, threshold=0.0)])
    assert len(model.calls) == 2  # two blocks, every masked position above tau at the first step

    model = ScriptedBackboneDouble()
    generate(model, [make_request(8, gen_length=16, threshold=1.0, steps=3)])  # nothing is ever above tau
    assert len(model.calls) == 6
    masks_left = [int((c["input_ids"][0, -8:] == MASK_ID).sum()) for c in model.calls]
    assert masks_left == [8, 5, 2, 8, 5, 2]  # schedule [3, 3, 2] per block


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch():
    model = ScriptedBackboneDouble(sharpness=1.0)
    sampled = dict(temperature=1.0, top_k=20, top_p=0.9, threshold=1.0)
    alone = generate(model, [make_request(5, seed=7, **sampled)])[0].ids
    assert generate(model, [make_request(5, seed=7, **sampled)])[0].ids == alone
    assert generate(model, [make_request(5, seed=8, **sampled)])[0].ids != alone
    others = [
        make_request(13, seed=1, **sampled),
        make_request(2, gen_length=30, seed=2),
        make_request(9, block_length=4, steps=2, seed=3, **sampled),
    ]
    batched = generate(model, [others[0], make_request(5, seed=7, **sampled), *others[1:]])
    assert batched[1].ids == alone
    assert [r.ids for r in (batched[0], *batched[2:])] == [generate(model, [o])[0].ids for o in others]


def test_stops_after_the_block_holding_eos_and_cuts_after_it():
    prompt_len = 5
    model = ScriptedBackboneDouble(script={prompt_len + 4: EOS_ID})
    [result] = generate(model, [make_request(prompt_len, gen_length=40, threshold=0.0)])
    assert result.ids[-1] == EOS_ID and len(result.ids) == 5
    assert EOS_ID not in result.ids[:-1]
    assert result.finish_reason == "stop"
    assert len(model.calls) == 2  # block 0 (prompt tail) and block 1 hold the EOS; blocks 2..5 never run


def test_eos_in_the_final_block_overhang_is_clamped_to_gen_length():
    # P=5, G=10, B=8: the sequence is 16 long; position 15 lies beyond P+G and is cut away.
    model = ScriptedBackboneDouble(script={15: EOS_ID})
    [result] = generate(model, [make_request(5, gen_length=10, threshold=0.0)])
    assert len(result.ids) == 10 and EOS_ID not in result.ids
    assert result.finish_reason == "length"


def test_additional_stop_ids_end_generation_like_eos():
    boi = PAD_FREE_IDS[-1]
    model = ScriptedBackboneDouble(script={9: boi}, forbidden=(EOS_ID, MASK_ID, boi))
    [result] = generate(model, [make_request(5, gen_length=30, stop_ids=(boi,), threshold=0.0)])
    assert result.ids[-1] == boi and len(result.ids) == 5 and result.finish_reason == "stop"


def test_eos_early_stop_finishes_inside_the_block():
    script = {6: EOS_ID}
    slow = dict(gen_length=20, block_length=16, steps=16, threshold=1.0)
    late = ScriptedBackboneDouble(script=script)
    without = generate(late, [make_request(5, **slow)])[0]
    early = ScriptedBackboneDouble(script=script)
    with_stop = generate(early, [make_request(5, eos_early_stop=True, **slow)])[0]
    assert with_stop.ids == without.ids and with_stop.ids[-1] == EOS_ID
    assert len(early.calls) < len(late.calls)


def test_image_only_restricts_the_vocabulary():
    model = ScriptedBackboneDouble(script={7: EOS_ID})  # EOS would win here without the restriction
    req = make_request(5, gen_length=16, image_only=True, image_token_offset=IMAGE_OFFSET, temperature=1.0, seed=0)
    [result] = generate(model, [req])
    assert len(result.ids) == 16 and min(result.ids) >= IMAGE_OFFSET


def test_progress_counts_every_step_and_ends_at_the_total():
    model = ScriptedBackboneDouble()
    seen = []
    generate(model, [make_request(8, gen_length=16, steps=4, threshold=1.0)], progress=lambda *a: seen.append(a))
    # blocks 1 and 2 are processed (block 0 is all prompt), 4 steps each
    assert seen == [("denoise", i, 8) for i in range(1, 9)]
    assert len(seen) == len(model.calls)

    model, seen = ScriptedBackboneDouble(), []
    generate(model, [make_request(5, gen_length=11, steps=4, threshold=1.0)], progress=lambda *a: seen.append(a))
    # block 0 holds 3 masked positions (schedule 2, 2, ...) and ends after 2 of its 4 steps: the count jumps
    assert seen == [("denoise", i, 8) for i in (1, 4, 5, 6, 7, 8)]


def test_settled_ids_grow_by_finished_blocks_and_end_as_the_result():
    model = ScriptedBackboneDouble(seed=3)
    seen: list[tuple[int, list[int]]] = []
    # prompt 5, gen 19: blocks of 8 end at 8, 16 and 24; the first block holds 3 generated positions
    [result] = generate(model, [make_request(5, gen_length=19, steps=4, threshold=1.0)],
                        settled=lambda index, ids: seen.append((index, list(ids))))
    assert [len(ids) for _, ids in seen] == [3, 11, 19] and {index for index, _ in seen} == {0}
    assert seen[-1][1] == result.ids
    for (_, shorter), (_, longer) in zip(seen, seen[1:]):
        assert longer[:len(shorter)] == shorter  # settled ids never change, they only grow


def test_settled_ids_stop_at_the_stop_token():
    prompt_len = 5
    model = ScriptedBackboneDouble(script={prompt_len + 4: EOS_ID})
    seen = []
    [result] = generate(model, [make_request(prompt_len, gen_length=16)], settled=lambda i, ids: seen.append(ids))
    # The first block (positions 5-7) settles 3 ids; the next one holds the stop: the result, cut after it.
    assert seen == [result.ids[:3], result.ids] and result.ids[-1] == EOS_ID and len(result.ids) == 5


def test_cancellation_is_checked_between_steps():
    model = ScriptedBackboneDouble()
    checks = iter([False, False, True])
    with pytest.raises(Cancelled):
        generate(model, [make_request(5, threshold=1.0)], should_cancel=lambda: next(checks))
    assert len(model.calls) == 2


@pytest.mark.parametrize(
    "field,value",
    [("steps", 0), ("block_length", 0), ("gen_length", 0), ("top_p", 1.5), ("temperature", -1.0)],
)
def test_bad_request_fields_are_named(field, value):
    with pytest.raises(ModelInputError) as err:
        generate(ScriptedBackboneDouble(), [make_request(5, **{field: value})])
    assert err.value.field == field


def test_image_only_needs_the_offset():
    with pytest.raises(ModelInputError) as err:
        generate(ScriptedBackboneDouble(), [make_request(5, image_only=True)])
    assert err.value.field == "image_token_offset"


def test_top_k_and_top_p_filter_like_the_reference():
    from workers.model.sampler.sampling import sample_tokens

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    _, _, probs = sample_tokens(logits, temperature=1.0, top_k=2, top_p=None, generator=torch.Generator())
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    _, _, probs = sample_tokens(logits, temperature=1.0, top_k=0, top_p=0.7, generator=torch.Generator())
    assert torch.allclose(probs, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))  # mass before 0.15 is 0.8 > 0.7
    _, _, probs = sample_tokens(logits, temperature=1.0, top_k=0, top_p=0.85, generator=torch.Generator())
    assert torch.allclose(probs, torch.tensor([[0.5, 0.3, 0.15, 0.0]]) / 0.95)
    tokens, token_probs, _ = sample_tokens(logits, temperature=0.0, top_k=None, top_p=None, generator=None)
    assert tokens.tolist() == [0] and torch.allclose(token_probs, torch.tensor([0.5]))
