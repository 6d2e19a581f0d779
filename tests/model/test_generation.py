"""Task-level generation (docs/model.md §3.3–3.5) on the real tiny backbone and tokenizer."""

from __future__ import annotations

import pytest
import torch
from tests.model.test_sampler_doubles import single_torch_thread  # noqa: F401 (autouse fixture)
from torch import nn

from workers.model import prompts as P
from workers.model.backbone import load_backbone
from workers.model.errors import Cancelled, ModelInputError
from workers.model.generation import edit_tokens, text_to_image_tokens, understand_tokens
from workers.model.sampler import GenerationRequest, generate
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer

GRID = 4


def t2i(prompt: str, **options) -> TextToImageTask:
    """A text-to-image task whose backbone grid is GRID x GRID (32 px per code at resolution_multiplier 2)."""
    return TextToImageTask(prompt, **{"width": 32 * GRID, "height": 32 * GRID, **options})


@pytest.fixture(scope="module")
def backbone(tiny_ckpt):
    model = load_backbone(tiny_ckpt, device="cpu", dtype=torch.float32)
    return model, TextTokenizer.from_folder(tiny_ckpt, model.config)


class RecordingBackboneDouble(nn.Module):
    """Test double around the real backbone: records every batch and can force a token at a position id
    (a large logit bias), so a test can make the random tiny model emit `<boi>` or EOS where it wants."""

    def __init__(self, model, script: dict[int, int] | None = None):
        super().__init__()
        self.inner = model
        self.config = model.config
        self.script = script or {}
        self.calls: list[torch.Tensor] = []

    def forward(self, input_ids, position_ids, *args, logits_to_keep=0, **kwargs):
        self.calls.append(input_ids.clone())
        out = self.inner(input_ids, position_ids, *args, logits_to_keep=logits_to_keep, **kwargs)
        logits = out.logits.clone()
        kept = position_ids[:, -logits.shape[1] :]
        for position, token in self.script.items():
            logits[..., token] += 100.0 * (kept == position)
        return out._replace(logits=logits)


def codes_in_range(codes, tok):
    return len(codes) == GRID * GRID and all(0 <= c < tok.codebook_size for c in codes)


def test_text_to_image_returns_the_requested_grid_of_codes(backbone):
    model, tok = backbone
    spy = RecordingBackboneDouble(model)
    out = text_to_image_tokens(spy, tok, t2i("a red cat"))
    assert out.grid_h == GRID and out.grid_w == GRID and out.thinking is None
    assert codes_in_range(out.codes, tok)
    cond, uncond = P.t2i_prompts(tok, "a red cat", GRID, GRID)
    first = spy.calls[0]
    assert first.shape[0] == 2  # cond + uncond rows (CFG 2.0)
    assert first[0, : len(cond)].tolist() == cond
    assert first[1, len(cond) - len(uncond) : len(cond)].tolist() == uncond
    assert text_to_image_tokens(model, tok, t2i("a red cat")) == out  # greedy


def test_thinking_mode_runs_text_then_image_from_the_text(backbone):
    model, tok = backbone
    phase1 = P.thinking_phase1_prompt(tok, "a red cat")
    boi_at = len(phase1) + 5
    spy = RecordingBackboneDouble(model, script={boi_at: tok.boi_id})
    stages = []
    out = text_to_image_tokens(
        spy, tok, t2i("a red cat", mode="thinking", thinking_gen_length=40, thinking_steps=8),
        progress=lambda stage, *_: stages.append(stage),
    )
    assert codes_in_range(out.codes, tok)
    think_calls = [c for c in spy.calls if c.shape[0] == 1]
    first_image = next(i for i, c in enumerate(spy.calls) if c.shape[0] == 2)
    assert first_image == len(think_calls) > 0  # all of phase 1 (no CFG), then phase 2 (CFG rows)
    cond_row = spy.calls[first_image][0]
    assert cond_row[: len(phase1)].tolist() == phase1
    thought = cond_row[len(phase1) : boi_at].tolist()  # the 5 text tokens phase 1 wrote before <boi>
    assert tok.mask_id not in thought
    assert cond_row[boi_at : boi_at + 4].tolist() == P.image_header(tok, GRID, GRID)  # requested grid
    assert out.thinking == tok.decode(thought).strip()
    stages = [stage for stage in stages if stage != "tokenize"]
    assert stages[0] == "think" and stages[-1] == "denoise" and "denoise" not in stages[: len(think_calls)]


def test_understanding_decodes_the_answer_up_to_eos(backbone):
    model, tok = backbone
    codes = list(range(GRID * GRID))
    prompt = P.understand_prompt(tok, codes, GRID, GRID, "What is in this image?")
    spy = RecordingBackboneDouble(model, script={len(prompt) + 6: tok.eos_id})
    answer = understand_tokens(spy, tok, UnderstandTask("What is in this image?", gen_length=64, steps=8), codes,
                               GRID, GRID)
    request = GenerationRequest(prompts=[prompt], gen_length=64, steps=8, block_length=32, mask_id=tok.mask_id,
                                eos_id=tok.eos_id)
    [result] = generate(spy, [request])
    assert len(result.ids) == 7 and result.ids[-1] == tok.eos_id  # cut after the first EOS
    assert answer == tok.decode(result.ids).strip()


@pytest.mark.parametrize("image_scale,rows", [(0.0, 2), (1.5, 3)])
def test_editing_uses_two_or_three_cfg_branches(backbone, image_scale, rows):
    model, tok = backbone
    spy = RecordingBackboneDouble(model)
    out = edit_tokens(spy, tok, EditTask("make the sky purple", cfg_image_scale=image_scale),
                      list(range(GRID * GRID)), GRID, GRID)
    assert out.grid_h == GRID and out.grid_w == GRID and codes_in_range(out.codes, tok)
    assert {c.shape[0] for c in spy.calls} == {rows}


def test_sprint_options_are_accepted_as_a_mapping(backbone):
    model, tok = backbone
    out = text_to_image_tokens(model, tok, t2i("a dog", sprint={"keep_ratio": 0.5, "cache_warmup_steps": 1}))
    assert codes_in_range(out.codes, tok)


@pytest.mark.parametrize(
    "field,kwargs",
    [
        ("height", dict(height=0)),
        ("steps", dict(steps=0)),
        ("block_length", dict(block_length=0)),
        ("mode", dict(mode="dreaming")),
        ("prompt", dict(prompt="  ")),
        ("sprint", dict(sprint={"keep": 0.5})),
        ("sprint.keep_ratio", dict(sprint={"keep_ratio": 1.5})),
    ],
)
def test_bad_text_to_image_input_names_the_field(backbone, field, kwargs):
    model, tok = backbone
    args = dict(prompt="a cat") | kwargs
    with pytest.raises(ModelInputError) as err:
        text_to_image_tokens(model, tok, t2i(args.pop("prompt"), **args))
    assert err.value.field == field


def test_bad_edit_and_understanding_input_names_the_field(backbone):
    model, tok = backbone
    with pytest.raises(ModelInputError) as err:
        edit_tokens(model, tok, EditTask("make it blue"), [0] * 15, GRID, GRID)
    assert err.value.field == "codes"
    with pytest.raises(ModelInputError) as err:
        understand_tokens(model, tok, UnderstandTask("why?", gen_length=0), [0] * 16, GRID, GRID)
    assert err.value.field == "gen_length"


def test_cancellation_stops_generation(backbone):
    model, tok = backbone
    with pytest.raises(Cancelled):
        text_to_image_tokens(model, tok, t2i("a cat"), should_cancel=lambda: True)


def test_task_requests_reuse_the_prefix_and_keep_the_baseline_tokens(backbone):
    """The builders turn on the exact prefix cache: each block's first step runs the window, the others only
    the block; the tokens are those of the reference loop that re-runs the window at every step."""
    import dataclasses

    from workers.model import generation as G

    model, tok = backbone
    codes = [(7 * i) % tok.codebook_size for i in range(GRID * GRID)]
    requests = {
        "text-to-image (2-way CFG)": G.text_to_image_request(tok, t2i("a red cat", steps=4, block_length=8,
                                                                      seed=1).checked()),
        "understanding": G.understand_request(tok, UnderstandTask("What is it?", gen_length=24, steps=8,
                                                                  block_length=8, seed=2).checked(),
                                              codes, GRID, GRID),
        "thinking, phase 1": G.thinking_phase1_request(tok, t2i("a red cat", mode="thinking", thinking_steps=8,
                                                                thinking_gen_length=16, block_length=8,
                                                                seed=3).checked()),
    }
    for name, cached in requests.items():
        assert cached.prefix_cache, name
        reference = dataclasses.replace(cached, prefix_cache=False)
        runs = {}
        for label, request in (("cached", cached), ("reference", reference)):
            spy = RecordingBackboneDouble(model)
            [result] = generate(spy, [request])
            runs[label] = (result, sum(ids.numel() for ids in spy.calls))
        (fast, fast_passes), (slow, slow_passes) = runs["cached"], runs["reference"]
        assert fast.ids == slow.ids and not fast.sprint_used, name
        assert fast_passes < slow_passes / 2, (name, fast_passes, slow_passes)
