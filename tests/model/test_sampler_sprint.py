"""SPRINT (docs/model.md §3.6): prefix KV reuse, pruning, adaptive unmasking, fallback for 3-way CFG."""

from __future__ import annotations

import pytest
import torch
from tests.model.test_sampler_doubles import (  # noqa: F401 (single_torch_thread: autouse fixture)
    EOS_ID, IMAGE_OFFSET, MASK_ID, PAD_FREE_IDS, ScriptedBackboneDouble,
    single_torch_thread,
)

from workers.model.errors import ModelInputError
from workers.model.sampler import GenerationRequest, SprintOptions, generate
from workers.model.sampler.sampling import confidence_scores

EXACT = SprintOptions(keep_ratio=1.0, cache_warmup_steps=1, adaptive_unmasking=False)


def make_request(prompts, **overrides):
    fields = dict(prompts=prompts, gen_length=24, block_length=8, steps=4, mask_id=MASK_ID, eos_id=EOS_ID,
                  threshold=0.9)
    fields.update(overrides)
    return GenerationRequest(**fields)


@pytest.mark.parametrize("warmup", [0, 1, 2])
@pytest.mark.parametrize("prompts", [[PAD_FREE_IDS[:11]], [PAD_FREE_IDS[:11], PAD_FREE_IDS[20:25]]])
def test_sprint_without_pruning_equals_the_baseline(prompts, warmup):
    baseline = generate(ScriptedBackboneDouble(), [make_request(prompts)])[0]
    model = ScriptedBackboneDouble()
    sprint = SprintOptions(keep_ratio=1.0, cache_warmup_steps=warmup, adaptive_unmasking=False)
    result = generate(model, [make_request(prompts, sprint=sprint)])[0]
    assert result.ids == baseline.ids and result.sprint_used
    cached = [c for c in model.calls if c["past_len"] > 0]
    assert cached, "the prefix cache was never used"
    assert all(c["input_ids"].shape[1] == 8 for c in cached)  # only the active block is run


def test_sprint_and_baseline_requests_share_a_batch():
    # Different prompt lengths, so one request captures its prefix while another already reuses its cache.
    requests = [
        make_request([PAD_FREE_IDS[:11]], sprint=EXACT),
        make_request([PAD_FREE_IDS[:3]], gen_length=40),
        make_request([PAD_FREE_IDS[:19], PAD_FREE_IDS[20:25]], cfg_scale=2.0, sprint=EXACT),
        make_request([PAD_FREE_IDS[:6]], gen_length=30, sprint=SprintOptions(keep_ratio=0.5, cache_warmup_steps=2)),
    ]
    model = ScriptedBackboneDouble()
    together = generate(model, requests)
    # A step where some requests capture while others reuse their cache runs two forwards: the cached rows
    # are never padded out to a whole window.
    cached = [c for c in model.calls if c["past_len"] > 0]
    assert cached and all(c["input_ids"].shape[1] == 8 for c in cached)
    assert all(not c["use_cache"] for c in cached)
    assert len(model.calls) > max(r.forward_steps for r in together)  # some steps took two forwards
    assert [r.ids for r in together] == [generate(ScriptedBackboneDouble(), [r])[0].ids for r in requests]


def test_pruning_shrinks_the_prefix_cache_and_still_fills_gen_length():
    prompt = PAD_FREE_IDS[:6] + list(range(IMAGE_OFFSET, IMAGE_OFFSET + 10))  # 6 text + 10 image ids
    model = ScriptedBackboneDouble()
    sprint = SprintOptions(keep_ratio=0.5, cache_warmup_steps=1, text_keep_ratio=1.0)
    req = make_request([prompt], gen_length=24, threshold=1.0, sprint=sprint, image_token_offset=IMAGE_OFFSET)
    [result] = generate(model, [req])
    assert len(result.ids) == 24 and MASK_ID not in result.ids
    assert [c["key_importance"] for c in model.calls].count(True) == 3  # one capture per generated block
    first_cached = next(c for c in model.calls if c["past_len"] > 0)
    # block 2 ([16, 24)) has a 16-token prefix: 6 text kept, ceil(0.5 * 10) image kept
    assert first_cached["past_len"] == 6 + 5


def test_adaptive_unmasking_takes_ceil_of_remaining_over_steps_left():
    model = ScriptedBackboneDouble()
    sprint = SprintOptions(keep_ratio=1.0, cache_warmup_steps=1)
    generate(model, [make_request([PAD_FREE_IDS[:5]], gen_length=11, steps=4, threshold=1.0, sprint=sprint)])
    masks_left = [int((c["input_ids"][0, -8:] == MASK_ID).sum()) for c in model.calls]
    # block 0: 3 masked over 4 steps -> 1, 1, 1; block 1: 8 over 4 -> 2, 2, 2, 2
    assert masks_left == [3, 2, 1, 8, 6, 4, 2]


def test_three_way_cfg_falls_back_to_the_baseline():
    prompts = [PAD_FREE_IDS[:11], PAD_FREE_IDS[20:25], PAD_FREE_IDS[25:27]]
    model = ScriptedBackboneDouble()
    req = make_request(prompts, cfg_scale=2.0, cfg_image_scale=1.0, sprint=SprintOptions())
    [result] = generate(model, [req])
    assert not result.sprint_used and all(c["past_len"] == 0 for c in model.calls)
    baseline = make_request(prompts, cfg_scale=2.0, cfg_image_scale=1.0)
    assert result.ids == generate(ScriptedBackboneDouble(), [baseline])[0].ids


def test_confidence_strategies():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    chosen = probs.max(-1).values
    assert torch.allclose(confidence_scores("low_confidence", chosen, probs), chosen)
    assert torch.allclose(confidence_scores("top_k_margin", chosen, probs), torch.tensor([0.5, 0.05]))
    neg_entropy = confidence_scores("neg_entropy", chosen, probs)
    assert neg_entropy[0] > neg_entropy[1]  # the peakier distribution is the more confident


@pytest.mark.parametrize("strategy", ["top_k_margin", "neg_entropy"])
def test_other_strategies_generate_complete_outputs(strategy):
    sprint = SprintOptions(keep_ratio=0.6, cache_warmup_steps=1, remasking=strategy)
    [result] = generate(ScriptedBackboneDouble(), [make_request([PAD_FREE_IDS[:5]], sprint=sprint)])
    assert len(result.ids) == 24 and MASK_ID not in result.ids


@pytest.mark.parametrize(
    "field,options",
    [
        ("sprint.keep_ratio", SprintOptions(keep_ratio=0.0)),
        ("sprint.cache_warmup_steps", SprintOptions(cache_warmup_steps=-1)),
        ("sprint.remasking", SprintOptions(remasking="random")),
        ("sprint.confidence_alpha", SprintOptions(confidence_alpha=2.0)),
    ],
)
def test_bad_sprint_options_are_named(field, options):
    with pytest.raises(ModelInputError) as err:
        generate(ScriptedBackboneDouble(), [make_request([PAD_FREE_IDS[:5]], sprint=options)])
    assert err.value.field == field


def test_sprint_defaults_are_the_services_and_sprint_true_uses_them():
    from shared.jobs import SprintOptions as ServiceSprintOptions
    from workers.model.tasks import sprint_options

    mine, service = SprintOptions(), ServiceSprintOptions()
    names = ("keep_ratio", "cache_warmup_steps", "confidence_alpha", "image_keep_ratio", "text_keep_ratio",
             "remasking")
    assert {n: getattr(mine, n) for n in names} == {n: getattr(service, n) for n in names}
    assert (mine.keep_ratio, mine.cache_warmup_steps) == (0.5, 1)  # docs/model.md §3.6: the official README's
    assert sprint_options(True) == mine and sprint_options(False) is None
