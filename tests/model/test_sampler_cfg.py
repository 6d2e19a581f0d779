"""Classifier-free guidance rows and formulas (docs/model.md §3.2) on the scripted backbone double."""

from __future__ import annotations

import torch
from tests.model.test_sampler_doubles import (  # noqa: F401 (single_torch_thread: autouse fixture)
    EOS_ID, MASK_ID, PAD_FREE_IDS, ScriptedBackboneDouble, block_causal_mask,
    single_torch_thread,
)

from workers.model.sampler import GenerationRequest, generate
from workers.model.sampler.guidance import guided_logits

COND = PAD_FREE_IDS[:10]
UNCOND = PAD_FREE_IDS[20:22]  # 8 shorter: its padding fills exactly one block of 8
NO_IMAGE = PAD_FREE_IDS[24:26]


def cfg_request(prompts, **overrides):
    fields = dict(prompts=prompts, gen_length=12, block_length=8, steps=4, mask_id=MASK_ID, eos_id=EOS_ID,
                  cfg_scale=2.0, threshold=0.0)
    fields.update(overrides)
    return GenerationRequest(**fields)


def own_logits(model, ids, length):
    """Logits of the last block for one branch run alone, unpadded, at positions 0..length-1."""
    x = torch.full((1, length), MASK_ID)
    x[0, : len(ids)] = torch.tensor(ids)
    return model(x, torch.arange(length)[None], block_causal_mask(length, 8)).logits[0, -8:]


def test_uncond_row_is_left_padded_with_masks_hidden_and_positions_restart():
    model = ScriptedBackboneDouble()
    generate(model, [cfg_request([COND, PAD_FREE_IDS[20:26]])])  # uncond 4 shorter than cond
    first = model.calls[0]
    ids, pos, mask = first["input_ids"], first["position_ids"], first["attention_mask"]
    assert ids.shape[0] == 2
    assert ids[1, :4].tolist() == [MASK_ID] * 4 and ids[1, 4:10].tolist() == PAD_FREE_IDS[20:26]
    assert pos[0].tolist() == list(range(16))
    assert pos[1].tolist() == [0] * 4 + list(range(12))
    assert torch.isneginf(mask[1, 0, 4:, :4]).all()  # pad columns hidden from every real query
    assert (mask[1, 0, 4:, 4:] == block_causal_mask(16, 8)[0, 0, 4:, 4:]).all()
    second = model.calls[1]  # next block: the accepted tokens were written into both rows
    assert torch.equal(second["input_ids"][0, 10:16], second["input_ids"][1, 10:16])


def test_two_way_guidance_matches_a_hand_computation():
    model = ScriptedBackboneDouble(sharpness=1.0)
    [result] = generate(model, [cfg_request([COND, UNCOND], cfg_scale=3.0)])
    c = own_logits(model, COND, 16)
    u = own_logits(model, UNCOND, 8)  # the padded row, unpadded: shifted by exactly one block
    expected = (u + 3.0 * (c - u)).argmax(-1)[2:]  # masked positions 10..15 of the first block
    assert result.ids[:6] == expected.tolist()
    assert result.ids[:6] != c.argmax(-1)[2:].tolist()  # guidance changed the outcome


def test_three_way_guidance_matches_a_hand_computation():
    model = ScriptedBackboneDouble(sharpness=1.0)
    req = cfg_request([COND, UNCOND, NO_IMAGE], cfg_scale=2.5, cfg_image_scale=1.5)
    [result] = generate(model, [req])
    assert model.calls[0]["input_ids"].shape[0] == 3
    c, nt, ni = own_logits(model, COND, 16), own_logits(model, UNCOND, 8), own_logits(model, NO_IMAGE, 8)
    expected = (nt + 2.5 * (c - nt) + 1.5 * (nt - ni)).argmax(-1)[2:]
    assert result.ids[:6] == expected.tolist()


def test_guidance_formulas():
    rows = torch.randn(3, 4, 6)
    c, u, ni = rows
    assert torch.allclose(guided_logits(rows[:2], cfg_scale=2.0, cfg_image_scale=0.0), u + 2 * (c - u))
    assert torch.allclose(
        guided_logits(rows, cfg_scale=4.0, cfg_image_scale=0.5), u + 4 * (c - u) + 0.5 * (u - ni)
    )
    rescaled = guided_logits(rows[:2], cfg_scale=2.0, cfg_image_scale=0.0, cfg_rescale=1.0)
    assert torch.allclose(rescaled.std(-1), c.std(-1), atol=1e-5)  # full rescale restores cond's std


def test_scale_one_runs_only_the_conditional_row():
    model = ScriptedBackboneDouble()
    guided_off = generate(model, [cfg_request([COND, UNCOND], cfg_scale=1.0)])[0].ids
    assert all(c["input_ids"].shape[0] == 1 for c in model.calls)
    assert guided_off == generate(ScriptedBackboneDouble(), [cfg_request([COND])])[0].ids
