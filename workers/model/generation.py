"""Task-level token generation: text-to-image (normal and thinking), understanding, editing.

Builds each task's sampler requests from a checked task (`workers.model.tasks`): `*_request`, the one place
they are built and where the prompt is built, once, and checked against the backbone's positions. Orders
text-to-image's phases (`text_to_image_codes`: in thinking mode the plan, then the image) for the Pipeline and
the engine alike, which differ only in where a step runs (`TextToImageSteps`). Reads the sampler's ids back
(`image_codes`, `answer_text`, `thinking_output`). Image codes go in and come out *without*
`image_token_offset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from workers.model import pipeline_inputs as inputs
from workers.model import prompts as P
from workers.model.hooks import Progress, ShouldCancel, StageClock
from workers.model.sampler import GenerationRequest, GenerationResult, generate
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer

# Progress stage names: the thinking pass is reported apart from the image denoising that follows it.
STAGE_TOKENIZE = "tokenize"
STAGE_THINK = "think"
STAGE_DENOISE = "denoise"

# ---- request builders: the one place each task's sampler requests are built (the Pipeline and the engine's
# tokenizer actor both call them); each takes a checked task -------------------------------------------------
# Every task request reuses the prefix KV within a block (exact; see GenerationRequest.prefix_cache).
PREFIX_CACHE = True


def _image_request(tok: TextTokenizer, branches, grid_h: int, grid_w: int, **kw) -> GenerationRequest:
    # docs/model.md §3.3 / open question 2: gen_length is exactly H·W image positions (as `LI`), not a larger
    # budget (sglang passes 1088 for 1024): the image-only vocabulary cannot end early, so every extra
    # position would only be denoised and cut away.
    return GenerationRequest(
        prompts=branches,
        gen_length=grid_h * grid_w,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        image_only=True,
        image_token_offset=tok.image_token_offset,
        prefix_cache=PREFIX_CACHE,
        **kw,
    )


def text_to_image_request(tok: TextTokenizer, task: TextToImageTask) -> GenerationRequest:
    """The image request of normal-mode text-to-image (docs/model.md §3.3): 2-way CFG, image-only vocabulary."""
    cond, uncond = P.t2i_prompts(tok, task.prompt, task.grid_h, task.grid_w)
    inputs.check_positions(tok.config, "prompt", len(cond) + task.grid_h * task.grid_w)
    return _image_request(
        tok, [cond, uncond], task.grid_h, task.grid_w, steps=task.steps, block_length=task.block_length,
        cfg_scale=task.cfg_scale, threshold=task.threshold, temperature=task.temperature,
        cfg_rescale=task.cfg_rescale, seed=task.seed, sprint=task.sprint,
    )


def thinking_phase1_request(tok: TextTokenizer, task: TextToImageTask) -> GenerationRequest:
    """Thinking mode, phase 1 (docs/model.md §3.3): text diffusion without CFG or vocabulary restriction;
    `<boi>` stops it like EOS."""
    prompt = P.thinking_phase1_prompt(tok, task.prompt)
    # Phase 2 adds the plan and the image to this prompt; the sampler checks the plan's budget itself.
    inputs.check_positions(tok.config, "prompt", len(prompt) + task.grid_h * task.grid_w)
    return GenerationRequest(
        prompts=[prompt],
        gen_length=task.thinking_gen_length,
        steps=task.thinking_steps,
        block_length=task.block_length,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        stop_ids=(tok.boi_id,),
        threshold=task.threshold,
        temperature=task.temperature,
        seed=task.seed,
        sprint=task.sprint,
        prefix_cache=PREFIX_CACHE,
    )


def text_to_image_first_request(tok: TextTokenizer, task: TextToImageTask) -> tuple[str, GenerationRequest]:
    """(stage, request) of text-to-image's first sampler phase (docs/model.md §3.3): the image itself, or in
    thinking mode the thinking text (`thinking_phase2_request` then builds the image request)."""
    if task.mode == "thinking":
        return STAGE_THINK, thinking_phase1_request(tok, task)
    return STAGE_DENOISE, text_to_image_request(tok, task)


def thinking_phase2_request(tok: TextTokenizer, task: TextToImageTask,
                            phase1_ids: Sequence[int]) -> tuple[GenerationRequest, str]:
    """Thinking mode, phase 2: the image request conditioned on phase 1's ids, and phase 1's thinking text."""
    through_boi, thinking = thinking_output(tok, phase1_ids)
    # §3.3 / open question 9: the prompt builder puts the *requested* grid in the header
    # (prompts.PHASE2_USES_REQUESTED_GRID): the service must return exactly grid_h x grid_w codes.
    cond, uncond = P.thinking_phase2_prompts(tok, task.prompt, through_boi, task.grid_h, task.grid_w)
    request = _image_request(
        tok, [cond, uncond], task.grid_h, task.grid_w, steps=task.steps, block_length=task.block_length,
        cfg_scale=task.cfg_scale, threshold=task.threshold, temperature=task.temperature,
        cfg_rescale=task.cfg_rescale, seed=task.seed, sprint=task.sprint,
    )
    return request, thinking


def understand_request(tok: TextTokenizer, task: UnderstandTask, codes: Sequence[int], h: int,
                       w: int) -> GenerationRequest:
    """The understanding request (docs/model.md §3.4): the image block and question, text out, no CFG."""
    prompt = P.understand_prompt(tok, codes, h, w, task.question)
    inputs.check_positions(tok.config, "image", len(codes) + task.gen_length)
    return GenerationRequest(
        prompts=[prompt],
        gen_length=task.gen_length,
        steps=task.steps,
        block_length=task.block_length,
        threshold=task.threshold,
        temperature=task.temperature,
        eos_early_stop=task.eos_early_stop,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        seed=task.seed,
        sprint=task.sprint,
        prefix_cache=PREFIX_CACHE,
    )


def edit_request(tok: TextTokenizer, task: EditTask, codes: Sequence[int], h: int, w: int) -> GenerationRequest:
    """The editing request (docs/model.md §3.5): 2-way CFG against the no-text branch, plus the no-image branch
    only when cfg_image_scale > 0 (3-way; SPRINT then falls back to the baseline loop, §3.2)."""
    inputs.check_positions(tok.config, "image", 2 * len(codes))
    cond, no_text, no_image = P.edit_prompts(tok, codes, h, w, task.instruction,
                                             with_no_image=task.cfg_image_scale > 0)
    branches = [cond, no_text] + ([no_image] if no_image is not None else [])
    return _image_request(
        tok, branches, h, w, steps=task.steps, block_length=task.block_length, threshold=task.threshold,
        temperature=task.temperature, cfg_scale=task.cfg_text_scale, cfg_image_scale=task.cfg_image_scale,
        cfg_rescale=task.cfg_rescale, seed=task.seed, sprint=task.sprint,
    )


# ---- result readers -------------------------------------------------------------------------------------
def image_codes(tok: TextTokenizer, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
    """An image request's ids as codebook indices (offset removed); exactly grid_h·grid_w of them."""
    codes = [i - tok.image_token_offset for i in result.ids]
    if len(codes) != grid_h * grid_w or min(codes, default=0) < 0:
        raise RuntimeError(f"image generation returned {len(codes)} ids for a {grid_h}x{grid_w} grid")
    return codes


def answer_text(tok: TextTokenizer, result: GenerationResult) -> str:
    """A text request's ids as text, without special tokens."""
    return tok.decode(result.ids, skip_special_tokens=True).strip()


def partial_answer(tok: TextTokenizer, ids: Sequence[int]) -> str:
    """Settled ids of an answer still being generated as text. A character whose bytes span the boundary is
    left for the next block (byte-level BPE decodes half of one as U+FFFD), so the text only ever grows."""
    return tok.decode(list(ids), skip_special_tokens=True).rstrip("\ufffd").strip()


def thinking_output(tok: TextTokenizer, ids: Sequence[int]) -> tuple[list[int], str]:
    """Phase-1 ids through `<boi>` for phase 2, and the thinking text before the image header.

    If phase 1 ended without `<boi>` (EOS or budget spent), its text is the thinking and phase 2 continues
    after it (a trailing EOS dropped) with `<boi>` appended; the prompt builder then adds the full header.
    """
    ids = [int(i) for i in ids]
    if ids and ids[-1] == tok.boi_id:
        through_boi = ids
    else:
        through_boi = (ids[:-1] if ids and ids[-1] == tok.eos_id else ids) + [tok.boi_id]
    text_ids = through_boi[:-1]
    if len(text_ids) >= 3 and text_ids[-3] == tok.image_start_id:
        text_ids = text_ids[:-3]  # the model's own `<|image|><h><w>` header is not thinking text
    return through_boi, tok.decode(text_ids, skip_special_tokens=True).strip()


# ---- the phases of a task, in one order for the Pipeline and the engine ------------------------------
@dataclass(frozen=True)
class ImageCodes:
    """What the backbone drew for an image: `grid_h` x `grid_w` codes (no offset), and the thinking text of
    thinking mode (None otherwise)."""

    codes: list[int]
    grid_h: int
    grid_w: int
    thinking: str | None = None


class TextToImageSteps(Protocol):
    """Where each step of text-to-image runs: in this process (`LocalSteps`) or in the engine's actors."""

    def first_request(self, task: TextToImageTask) -> tuple[str, GenerationRequest]: ...

    def phase2_request(self, task: TextToImageTask, phase1: GenerationResult) -> tuple[GenerationRequest, str]: ...

    def generate(self, request: GenerationRequest, stage: str) -> GenerationResult: ...

    def image_codes(self, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]: ...


def text_to_image_codes(steps: TextToImageSteps, task: TextToImageTask, clock: StageClock) -> ImageCodes:
    """Text-to-image's backbone phases in order (docs/model.md §3.3), each timed under its stage: tokenize (the
    prompt, built once), then in thinking mode `think` (the plan, ended by `<boi>`), then `denoise` (the image
    codes, conditioned on the plan in thinking mode)."""
    with clock.stage(STAGE_TOKENIZE):
        phase, request = steps.first_request(task)
        clock.report(STAGE_TOKENIZE)
    with clock.stage(phase):
        result = steps.generate(request, phase)
    thinking = None
    with clock.stage(STAGE_DENOISE):
        if phase == STAGE_THINK:
            request, thinking = steps.phase2_request(task, result)
            result = steps.generate(request, STAGE_DENOISE)
        codes = steps.image_codes(result, task.grid_h, task.grid_w)
    return ImageCodes(codes, task.grid_h, task.grid_w, thinking)


@dataclass
class LocalSteps:
    """Text-to-image's steps on a backbone in this process."""

    model: torch.nn.Module
    tok: TextTokenizer
    progress: Progress | None = None
    should_cancel: ShouldCancel | None = None

    def first_request(self, task: TextToImageTask) -> tuple[str, GenerationRequest]:
        return text_to_image_first_request(self.tok, task)

    def phase2_request(self, task: TextToImageTask, phase1: GenerationResult) -> tuple[GenerationRequest, str]:
        return thinking_phase2_request(self.tok, task, phase1.ids)

    def generate(self, request: GenerationRequest, stage: str) -> GenerationResult:
        return generate(self.model, [request], progress=self.progress, should_cancel=self.should_cancel,
                        stage=stage)[0]

    def image_codes(self, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
        return image_codes(self.tok, result, grid_h, grid_w)


# ---- task functions on a backbone in this process: build, run, read --------------------------------------
def text_to_image_tokens(model: torch.nn.Module, tok: TextTokenizer, task: TextToImageTask, *,
                         progress: Progress | None = None, should_cancel: ShouldCancel | None = None) -> ImageCodes:
    """Text-to-image codes (docs/model.md §3.3) for `task` (checked here)."""
    clock = StageClock(progress, should_cancel)
    return text_to_image_codes(LocalSteps(model, tok, progress, should_cancel), task.checked(), clock)


def understand_tokens(model: torch.nn.Module, tok: TextTokenizer, task: UnderstandTask, codes: Sequence[int],
                      h: int, w: int, *, progress: Progress | None = None,
                      should_cancel: ShouldCancel | None = None) -> str:
    """The answer about an image given as codes (docs/model.md §3.4), decoded without special tokens."""
    request = understand_request(tok, task.checked(), codes, h, w)
    return answer_text(tok, generate(model, [request], progress=progress, should_cancel=should_cancel,
                                     stage=STAGE_DENOISE)[0])


def edit_tokens(model: torch.nn.Module, tok: TextTokenizer, task: EditTask, codes: Sequence[int], h: int, w: int,
                *, progress: Progress | None = None, should_cancel: ShouldCancel | None = None) -> ImageCodes:
    """The edited image's codes (docs/model.md §3.5) on the input's grid."""
    request = edit_request(tok, task.checked(), codes, h, w)
    result = generate(model, [request], progress=progress, should_cancel=should_cancel, stage=STAGE_DENOISE)[0]
    return ImageCodes(image_codes(tok, result, h, w), h, w)
