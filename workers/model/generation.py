"""Task-level token generation: text-to-image (normal and thinking), understanding, editing.

Builds each task's sampler requests (`*_request`, the one place they are built: the Pipeline uses them
through the task functions `*_tokens`, the engine's tokenizer actor calls them directly), runs the
block-diffusion sampler and reads its ids back (`image_codes`, `answer_text`, `thinking_output`).
Defaults mirror the reference implementation (MODEL_SPEC §3.3–3.5). Image codes go in and come out *without*
`image_token_offset`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch

from workers.model import prompts as P
from workers.model.errors import ModelInputError
from workers.model.hooks import Progress, ShouldCancel
from workers.model.sampler import GenerationRequest, GenerationResult, SprintOptions, generate
from workers.model.text_tokenizer import TextTokenizer


MODES = ("normal", "thinking")
# Progress stage names: the thinking pass is reported apart from the image denoising that follows it.
STAGE_THINK = "think"
STAGE_DENOISE = "denoise"

# MODEL_SPEC §3.1: the loop's own defaults (threshold 0.95, temperature 0 = greedy). The HF task functions
# expose no temperature; greedy is the reference behaviour, so `seed` only matters with temperature > 0.
DEFAULT_THRESHOLD = 0.95
DEFAULT_TEMPERATURE = 0.0


def sprint_options(sprint: SprintOptions | Mapping[str, Any] | None) -> SprintOptions | None:
    """Accept SPRINT options as the dataclass or a plain mapping of its fields (None = SPRINT off)."""
    if sprint is None or isinstance(sprint, SprintOptions):
        return sprint
    if not isinstance(sprint, Mapping):
        raise ModelInputError("sprint", f"expected SprintOptions, a mapping or None, got {type(sprint).__name__}")
    known = {f.name for f in fields(SprintOptions)}
    unknown = sorted(set(sprint) - known)
    if unknown:
        raise ModelInputError("sprint", f"unknown option(s) {unknown}; known: {sorted(known)}")
    return SprintOptions(**sprint)


def check_positive(field: str, value: Any) -> int:
    """`value` as an integer >= 1, or a `ModelInputError` naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelInputError(field, f"must be an integer >= 1, got {value!r}")
    return value


def check_text(field: str, value: Any) -> str:
    # A CFG companion replaces the user text by one `<uncondition>` token; empty text would make the
    # companion longer than the conditional prompt.
    if not isinstance(value, str) or not value.strip():
        raise ModelInputError(field, "must be non-empty text")
    return value


def _run(model, request: GenerationRequest, stage: str, progress, should_cancel,
         seconds: dict[str, float] | None = None) -> GenerationResult:
    started = time.perf_counter()
    result = generate(model, [request], progress=progress, should_cancel=should_cancel, stage=stage)[0]
    if seconds is not None:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started
    return result


# ---- request builders: the one place each task's sampler requests are built (the Pipeline through the
# task functions below, the engine's tokenizer actor directly) -------------------------------------------
# Every task request reuses the prefix KV within a block (exact; see GenerationRequest.prefix_cache).
PREFIX_CACHE = True


def _image_request(tok: TextTokenizer, branches, grid_h: int, grid_w: int, **kw) -> GenerationRequest:
    # MODEL_SPEC §3.3 / open question 2: gen_length is exactly H·W image positions (as `LI`), not a larger
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


def check_text_to_image(
    prompt: str,
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    mode: str = "normal",
    thinking_steps: int = 32,
    thinking_gen_length: int = 4096,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> None:
    """Every text-to-image argument check, done before any phase runs (thinking mode has two)."""
    check_text("prompt", prompt)
    check_positive("grid_h", grid_h), check_positive("grid_w", grid_w)
    check_positive("steps", steps)
    check_positive("block_length", block_length)
    if mode not in MODES:
        raise ModelInputError("mode", f"must be one of {MODES}, got {mode!r}")
    sprint_options(sprint)
    if mode == "thinking":
        check_positive("thinking_steps", thinking_steps)
        check_positive("thinking_gen_length", thinking_gen_length)


def text_to_image_request(
    tok: TextTokenizer,
    prompt: str,
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    cfg_scale: float = 2.0,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The image request of normal-mode text-to-image (MODEL_SPEC §3.3): 2-way CFG, image-only vocabulary."""
    check_text_to_image(prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, block_length=block_length, sprint=sprint)
    cond, uncond = P.t2i_prompts(tok, prompt, grid_h, grid_w)
    return _image_request(
        tok, [cond, uncond], grid_h, grid_w, steps=steps, block_length=block_length, cfg_scale=cfg_scale,
        threshold=threshold, temperature=temperature, cfg_rescale=cfg_rescale, seed=seed,
        sprint=sprint_options(sprint),
    )


def thinking_phase1_request(
    tok: TextTokenizer,
    prompt: str,
    *,
    thinking_steps: int = 32,
    thinking_gen_length: int = 4096,
    block_length: int = 32,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """Thinking mode, phase 1 (MODEL_SPEC §3.3): text diffusion without CFG or vocabulary restriction;
    `<boi>` stops it like EOS."""
    check_text("prompt", prompt)
    return GenerationRequest(
        prompts=[P.thinking_phase1_prompt(tok, prompt)],
        gen_length=check_positive("thinking_gen_length", thinking_gen_length),
        steps=check_positive("thinking_steps", thinking_steps),
        block_length=check_positive("block_length", block_length),
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        stop_ids=(tok.boi_id,),
        threshold=threshold,
        temperature=temperature,
        seed=seed,
        sprint=sprint_options(sprint),
        prefix_cache=PREFIX_CACHE,
    )


def text_to_image_first_request(
    tok: TextTokenizer,
    prompt: str,
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    cfg_scale: float = 2.0,
    mode: str = "normal",
    thinking_steps: int = 32,
    thinking_gen_length: int = 4096,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> tuple[str, GenerationRequest]:
    """(stage, request) of text-to-image's first sampler phase (MODEL_SPEC §3.3): the image itself, or in
    thinking mode the thinking text (`thinking_phase2_request` then builds the image request)."""
    check_text_to_image(prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, block_length=block_length, mode=mode,
                        thinking_steps=thinking_steps, thinking_gen_length=thinking_gen_length, sprint=sprint)
    common = dict(block_length=block_length, threshold=threshold, temperature=temperature, seed=seed, sprint=sprint)
    if mode == "thinking":
        return STAGE_THINK, thinking_phase1_request(
            tok, prompt, thinking_steps=thinking_steps, thinking_gen_length=thinking_gen_length, **common
        )
    return STAGE_DENOISE, text_to_image_request(
        tok, prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale,
        **common,
    )


def thinking_phase2_request(
    tok: TextTokenizer,
    prompt: str,
    phase1_ids: Sequence[int],
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    cfg_scale: float = 2.0,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> tuple[GenerationRequest, str]:
    """Thinking mode, phase 2: the image request conditioned on phase 1's ids, and phase 1's thinking text."""
    check_text_to_image(prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, block_length=block_length, sprint=sprint)
    through_boi, thinking = thinking_output(tok, phase1_ids)
    # §3.3 / open question 9: the prompt builder puts the *requested* grid in the header
    # (prompts.PHASE2_USES_REQUESTED_GRID): the service must return exactly grid_h x grid_w codes.
    cond, uncond = P.thinking_phase2_prompts(tok, prompt, through_boi, grid_h, grid_w)
    request = _image_request(
        tok, [cond, uncond], grid_h, grid_w, steps=steps, block_length=block_length, cfg_scale=cfg_scale,
        threshold=threshold, temperature=temperature, cfg_rescale=cfg_rescale, seed=seed,
        sprint=sprint_options(sprint),
    )
    return request, thinking


def understand_request(
    tok: TextTokenizer,
    codes: Sequence[int],
    h: int,
    w: int,
    question: str,
    *,
    steps: int = 32,
    gen_length: int = 2048,
    block_length: int = 32,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    eos_early_stop: bool = False,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The understanding request (MODEL_SPEC §3.4): the image block and question, text out, no CFG."""
    check_text("question", question)
    h, w = check_positive("h", h), check_positive("w", w)
    prompt = P.understand_prompt(tok, codes, h, w, question)
    return GenerationRequest(
        prompts=[prompt],
        gen_length=check_positive("gen_length", gen_length),
        steps=check_positive("steps", steps),
        block_length=check_positive("block_length", block_length),
        threshold=threshold,
        temperature=temperature,
        eos_early_stop=eos_early_stop,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        seed=seed,
        sprint=sprint_options(sprint),
        prefix_cache=PREFIX_CACHE,
    )


def edit_request(
    tok: TextTokenizer,
    codes: Sequence[int],
    h: int,
    w: int,
    instruction: str,
    *,
    steps: int = 8,
    block_length: int = 32,
    cfg_text_scale: float = 4.0,
    cfg_image_scale: float = 0.0,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
) -> GenerationRequest:
    """The editing request (MODEL_SPEC §3.5): 2-way CFG against the no-text branch, plus the no-image branch
    only when cfg_image_scale > 0 (3-way; SPRINT then falls back to the baseline loop, §3.2)."""
    check_text("instruction", instruction)
    h, w = check_positive("h", h), check_positive("w", w)
    check_positive("steps", steps)
    check_positive("block_length", block_length)
    if cfg_image_scale < 0:
        raise ModelInputError("cfg_image_scale", f"must be >= 0, got {cfg_image_scale}")
    cond, no_text, no_image = P.edit_prompts(tok, codes, h, w, instruction, with_no_image=cfg_image_scale > 0)
    branches = [cond, no_text] + ([no_image] if no_image is not None else [])
    return _image_request(
        tok, branches, h, w, steps=steps, block_length=block_length, threshold=threshold,
        temperature=temperature, cfg_scale=cfg_text_scale, cfg_image_scale=cfg_image_scale,
        cfg_rescale=cfg_rescale, seed=seed, sprint=sprint_options(sprint),
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


# ---- task functions: build, run, read -----------------------------------------------------------------
def text_to_image_tokens(
    model: torch.nn.Module,
    tok: TextTokenizer,
    prompt: str,
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    cfg_scale: float = 2.0,
    mode: str = "normal",
    thinking_steps: int = 32,
    thinking_gen_length: int = 4096,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    phase_seconds: dict[str, float] | None = None,
) -> dict:
    """Text-to-image tokens (MODEL_SPEC §3.3) -> {"codes": H·W codes (no offset), "h", "w", "thinking"}.

    Defaults: README (steps 8, cfg_scale 2.0, block 32; thinking_steps 32, thinking_gen_length 4096).
    `phase_seconds`, if given, receives the wall-clock seconds of each sampler phase ("think", "denoise").
    """
    options = dict(grid_h=grid_h, grid_w=grid_w, steps=steps, block_length=block_length, cfg_scale=cfg_scale,
                   threshold=threshold, temperature=temperature, cfg_rescale=cfg_rescale, seed=seed, sprint=sprint)
    stage, request = text_to_image_first_request(tok, prompt, mode=mode, thinking_steps=thinking_steps,
                                                 thinking_gen_length=thinking_gen_length, **options)
    thinking = None
    if stage == STAGE_THINK:
        phase1 = _run(model, request, STAGE_THINK, progress, should_cancel, phase_seconds)
        request, thinking = thinking_phase2_request(tok, prompt, phase1.ids, **options)
    result = _run(model, request, STAGE_DENOISE, progress, should_cancel, phase_seconds)
    return {"codes": image_codes(tok, result, grid_h, grid_w), "h": grid_h, "w": grid_w, "thinking": thinking}


def understand_tokens(
    model: torch.nn.Module,
    tok: TextTokenizer,
    codes: Sequence[int],
    h: int,
    w: int,
    question: str,
    *,
    steps: int = 32,
    gen_length: int = 2048,
    block_length: int = 32,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    eos_early_stop: bool = False,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> str:
    """Answer a question about an image given as codes (MODEL_SPEC §3.4); decoded without special tokens.

    Defaults: `GH:scripts/mmu_understand.py` / README (steps 32, gen_length 2048, block 32, threshold 0.95).
    """
    request = understand_request(
        tok, codes, h, w, question, steps=steps, gen_length=gen_length, block_length=block_length,
        threshold=threshold, temperature=temperature, eos_early_stop=eos_early_stop, seed=seed, sprint=sprint,
    )
    return answer_text(tok, _run(model, request, STAGE_DENOISE, progress, should_cancel))


def edit_tokens(
    model: torch.nn.Module,
    tok: TextTokenizer,
    codes: Sequence[int],
    h: int,
    w: int,
    instruction: str,
    *,
    steps: int = 8,
    block_length: int = 32,
    cfg_text_scale: float = 4.0,
    cfg_image_scale: float = 0.0,
    threshold: float = DEFAULT_THRESHOLD,
    temperature: float = DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: SprintOptions | Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
) -> dict:
    """Edit an image given as codes (MODEL_SPEC §3.5) -> {"codes", "h", "w"}; the output grid = the input's.

    CFG: 2-way against the no-text branch, plus the no-image branch only when cfg_image_scale > 0 (3-way;
    SPRINT then falls back to the baseline loop, §3.2). Defaults: README (steps 8, text 4.0, image 0.0).
    """
    request = edit_request(
        tok, codes, h, w, instruction, steps=steps, block_length=block_length, cfg_text_scale=cfg_text_scale,
        cfg_image_scale=cfg_image_scale, threshold=threshold, temperature=temperature, cfg_rescale=cfg_rescale,
        seed=seed, sprint=sprint,
    )
    result = _run(model, request, STAGE_DENOISE, progress, should_cancel)
    return {"codes": image_codes(tok, result, h, w), "h": h, "w": w}
