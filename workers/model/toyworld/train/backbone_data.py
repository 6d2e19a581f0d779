"""Seeded training sequences for the toy backbone, built only through the runtime's own request builders.

Each example is one sampler row exactly as `workers.model.sampler.state.start_request` lays it out for the
request `workers.model.generation` builds (so training sees what inference sends): CFG companions left-padded
with `<|mask|>` to the conditional prompt's length, position ids restarting at 0 on their first real token,
the sequence padded to whole blocks. The response (image codes, answer, plan) follows the prompt; the rest of
its last block is EOS, as LLaDA pads (the runtime cuts after the first EOS; for images the image-only
vocabulary hides EOS, and those overhang positions are cut away).

Tasks (`TASK_MIX`): text-to-image (cond, or the `<uncondition>` row with probability `UNCOND_DROPOUT`),
thinking phase 1 (plan sentence + image header + codes) and phase 2 (codes after the plan, cond or uncond),
understanding (8 × 8 reading-view codes, all five questions; answer + EOS) and editing (4 × 4 source →
4 × 4 target, all four instruction forms; cond, no-text or no-image branch). Only TRAINING combinations
appear, as caption, source or target; every example records the combinations it shows (`combos`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from workers.model import generation
from workers.model.config import BackboneConfig
from workers.model.sampler.state import start_request
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer
from workers.model.tiny_checkpoint import EOS_TOKEN

from ..codes import GENERATION_GRID, READING_GRID, scene_codes
from ..edits import random_edit
from ..texts import QUESTIONS, answer, caption
from ..world import IMAGE_SIDE, TRAINING, sample_scene
from .backbone_config import backbone_config_json
from .text_tokenizer import build_text_tokenizer
from .thinking_plan import plan_sentence

BLOCK = 32  # the runtime's default block_length (docs/model.md §3.1)
UNCOND_DROPOUT = 0.1  # text-to-image and thinking phase 2: the `<uncondition>` row instead of the caption
EDIT_BRANCHES = {"cond": 0.85, "no_text": 0.10, "no_image": 0.05}  # editing: drop instruction / source image
# Fractions of a batch per task; image tasks get more (understanding learnt fastest in the first run).
TASK_MIX = {"t2i": 0.33, "think1": 0.07, "think2": 0.10, "understand": 0.22, "edit": 0.28}


@dataclass(frozen=True)
class Phase:
    """What a training step draws. `questions`: weights of `QUESTIONS` (None = uniform)."""

    mix: dict[str, float]
    edit_branches: dict[str, float]
    questions: tuple[float, ...] | None = None


# Phase 2, from step 7000 (the end of the first shipped run, measured before it was added): "where is the
# shape?" and "describe the picture" were 70 % and 29 % right at code level while the other questions were at
# 100 %, so they draw 60 % of the questions; editing at the default cfg_text 4.0 extrapolates from the no-text
# branch, which at 10 % of edit rows was under-trained and added stray codes, so it doubles.
PHASES = ((0, Phase(TASK_MIX, EDIT_BRANCHES)),
          (7000, Phase({**TASK_MIX, "understand": 0.26, "t2i": 0.29},
                       {"cond": 0.75, "no_text": 0.20, "no_image": 0.05}, (0.1, 0.1, 0.3, 0.1, 0.4))))


def phase_at(step: int) -> Phase:
    return [phase for start, phase in PHASES if step >= start][-1]


@dataclass(frozen=True)
class Example:
    task: str  # e.g. "t2i", "t2i_uncond", "think1", "understand/where is the shape?", "edit/colour/no_text"
    ids: np.ndarray  # int64 [L], L a multiple of BLOCK: left pad, prompt, response, EOS to the block's end
    positions: np.ndarray  # int64 [L], as the sampler gives the row
    pad: int  # CFG left padding (hidden from every query)
    prompt_length: int  # where the response starts, in the row's own coordinates (pad included)
    combos: tuple[int, ...]  # combination indices shown (caption, source, target)


@lru_cache(maxsize=1)
def runtime_tokenizer() -> TextTokenizer:
    """The runtime's TextTokenizer over the word-level tokenizer (ids looked up by string, as at inference)."""
    tok = build_text_tokenizer()
    config = BackboneConfig.from_dict(backbone_config_json(tok.get_vocab_size(), tok.token_to_id(EOS_TOKEN)))
    return TextTokenizer(tok, config, EOS_TOKEN)


def _rows(request, response: list[int], eos_id: int) -> list[Example]:
    """Every branch row of `request` with `response` after its prompt, laid out by the sampler itself."""
    state = start_request(dataclasses.replace(request, gen_length=len(response), cfg_scale=2.0))
    x = state.x.clone()
    p = state.prompt_length
    x[:, p : p + len(response)] = torch.tensor(response, dtype=torch.long)
    x[:, p + len(response) :] = eos_id
    return [(x[r].numpy().copy(), state.positions[r].numpy().copy(), state.pads[r], p) for r in range(state.num_rows)]


def _example(task: str, row, combos) -> Example:
    ids, positions, pad, p = row
    return Example(task, ids, positions, pad, p, tuple(int(c) for c in combos))


def picture_task(prompt: str, **options) -> TextToImageTask:
    """A text-to-image task for a 128² picture: the GENERATION_GRID² code grid at resolution_multiplier 2."""
    return TextToImageTask(prompt, width=IMAGE_SIDE, height=IMAGE_SIDE, **options).checked()


def _codes(tok: TextTokenizer, codes) -> list[int]:
    return [tok.image_token_offset + int(c) for c in np.asarray(codes).reshape(-1)]


def t2i_example(rng: np.random.Generator, tok: TextTokenizer, phase: Phase | None = None) -> Example:
    scene = sample_scene(rng)
    request = generation.text_to_image_request(tok, picture_task(caption(scene)))
    rows = _rows(request, _codes(tok, scene_codes(scene, GENERATION_GRID)), tok.eos_id)
    uncond = rng.random() < UNCOND_DROPOUT
    return _example("t2i_uncond" if uncond else "t2i", rows[1 if uncond else 0], [scene.index])


def _plan_ids(tok: TextTokenizer, scene) -> list[int]:
    """Phase-1 output through `<boi>`: the plan sentence and the image header the model writes itself."""
    header = [tok.image_start_id, tok.reserved_id(GENERATION_GRID), tok.reserved_id(GENERATION_GRID), tok.boi_id]
    return tok.encode(plan_sentence(scene)) + header


def think1_example(rng: np.random.Generator, tok: TextTokenizer, phase: Phase | None = None) -> Example:
    scene = sample_scene(rng)
    request = generation.thinking_phase1_request(tok, picture_task(caption(scene), mode="thinking"))
    response = _plan_ids(tok, scene) + _codes(tok, scene_codes(scene, GENERATION_GRID))
    return _example("think1", _rows(request, response, tok.eos_id)[0], [scene.index])


def think2_example(rng: np.random.Generator, tok: TextTokenizer, phase: Phase | None = None) -> Example:
    scene = sample_scene(rng)
    request, _ = generation.thinking_phase2_request(tok, picture_task(caption(scene), mode="thinking"),
                                                    _plan_ids(tok, scene))
    rows = _rows(request, _codes(tok, scene_codes(scene, GENERATION_GRID)), tok.eos_id)
    uncond = rng.random() < UNCOND_DROPOUT
    return _example("think2_uncond" if uncond else "think2", rows[1 if uncond else 0], [scene.index])


def understand_example(rng: np.random.Generator, tok: TextTokenizer, phase: Phase = PHASES[0][1]) -> Example:
    scene = sample_scene(rng)
    if phase.questions is None:
        question = QUESTIONS[int(rng.integers(len(QUESTIONS)))]
    else:
        question = QUESTIONS[int(rng.choice(len(QUESTIONS), p=phase.questions))]
    codes = scene_codes(scene, READING_GRID).reshape(-1).tolist()
    request = generation.understand_request(tok, UnderstandTask(question).checked(), codes, READING_GRID,
                                            READING_GRID)
    response = tok.encode(answer(question, scene)) + [tok.eos_id]
    return _example(f"understand/{question}", _rows(request, response, tok.eos_id)[0], [scene.index])


def edit_example(rng: np.random.Generator, tok: TextTokenizer, phase: Phase = PHASES[0][1]) -> Example:
    source = sample_scene(rng)
    edit = random_edit(rng, source, TRAINING)
    codes = scene_codes(source, GENERATION_GRID).reshape(-1).tolist()
    # cfg_image_scale > 0 so the builder makes all three branches (cond, no-text, no-image).
    request = generation.edit_request(tok, EditTask(edit.instruction, cfg_image_scale=1.0).checked(), codes,
                                      GENERATION_GRID, GENERATION_GRID)
    rows = _rows(request, _codes(tok, scene_codes(edit.target, GENERATION_GRID)), tok.eos_id)
    names = list(phase.edit_branches)
    branch = names[int(rng.choice(len(names), p=list(phase.edit_branches.values())))]
    combos = [edit.target.index] if branch == "no_image" else [source.index, edit.target.index]
    return _example(f"edit/{edit.kind}/{branch}", rows[names.index(branch)], combos)


# Every builder takes the step's phase; only understanding and editing draw by it.
BUILDERS = {"t2i": t2i_example, "think1": think1_example, "think2": think2_example,
            "understand": understand_example, "edit": edit_example}


def sample_examples(rng: np.random.Generator, count: int, mix: dict[str, float] | None = None,
                    tok: TextTokenizer | None = None, phase: Phase | None = None) -> list[Example]:
    """`count` examples, tasks drawn by `mix` (default: the phase's); a seeded generator gives the same list.
    `phase`: what the step draws (default: the first phase, `phase_at(0)`)."""
    tok = tok or runtime_tokenizer()
    phase = phase or phase_at(0)
    mix = mix or phase.mix
    names = list(mix)
    weights = np.asarray([mix[n] for n in names], dtype=np.float64)
    tasks = rng.choice(len(names), size=count, p=weights / weights.sum())
    return [BUILDERS[names[t]](rng, tok, phase) for t in tasks]
