"""Task-level token generation: text-to-image (normal and thinking), understanding, editing.

Builds the prompts (`workers.model.prompts`), runs the block-diffusion sampler and turns its ids into what
the task returns. Defaults mirror the reference implementation (MODEL_SPEC §3.3–3.5). Image codes go in and
come out *without* `image_token_offset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import torch

from workers.model import prompts as P
from workers.model.errors import ModelInputError
from workers.model.sampler import GenerationRequest, GenerationResult, SprintOptions, generate
from workers.model.text_tokenizer import TextTokenizer

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]

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


def _positive(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelInputError(field, f"must be an integer >= 1, got {value!r}")
    return value


def _text(field: str, value: Any) -> str:
    # A CFG companion replaces the user text by one `<uncondition>` token; empty text would make the
    # companion longer than the conditional prompt.
    if not isinstance(value, str) or not value.strip():
        raise ModelInputError(field, "must be non-empty text")
    return value


def _run(model, request: GenerationRequest, stage: str, progress, should_cancel) -> GenerationResult:
    return generate(model, [request], progress=progress, should_cancel=should_cancel, stage=stage)[0]


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
        **kw,
    )


def _codes(tok: TextTokenizer, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
    codes = [i - tok.image_token_offset for i in result.ids]
    if len(codes) != grid_h * grid_w or min(codes, default=0) < 0:
        raise RuntimeError(f"image generation returned {len(codes)} ids for a {grid_h}x{grid_w} grid")
    return codes


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
) -> dict:
    """Text-to-image tokens (MODEL_SPEC §3.3) -> {"codes": H·W codes (no offset), "h", "w", "thinking"}.

    Defaults: README (steps 8, cfg_scale 2.0, block 32; thinking_steps 32, thinking_gen_length 4096).
    """
    _text("prompt", prompt)
    grid_h, grid_w = _positive("grid_h", grid_h), _positive("grid_w", grid_w)
    _positive("steps", steps)
    _positive("block_length", block_length)
    if mode not in MODES:
        raise ModelInputError("mode", f"must be one of {MODES}, got {mode!r}")
    options = sprint_options(sprint)
    common = dict(block_length=block_length, threshold=threshold, temperature=temperature, sprint=options)

    thinking = None
    if mode == "thinking":
        _positive("thinking_steps", thinking_steps)
        _positive("thinking_gen_length", thinking_gen_length)
        phase1_prompt = P.thinking_phase1_prompt(tok, prompt)
        # §3.3 phase 1: text diffusion without CFG or vocabulary restriction; <boi> stops it like EOS.
        phase1 = _run(
            model,
            GenerationRequest(
                prompts=[phase1_prompt],
                gen_length=thinking_gen_length,
                steps=thinking_steps,
                mask_id=tok.mask_id,
                eos_id=tok.eos_id,
                stop_ids=(tok.boi_id,),
                seed=seed,
                **common,
            ),
            STAGE_THINK,
            progress,
            should_cancel,
        )
        through_boi, thinking = _thinking_output(tok, phase1.ids)
        # §3.3 / open question 9: the prompt builder puts the *requested* grid in the header
        # (prompts.PHASE2_USES_REQUESTED_GRID): the service must return exactly grid_h x grid_w codes.
        cond, uncond = P.thinking_phase2_prompts(tok, prompt, through_boi, grid_h, grid_w)
    else:
        cond, uncond = P.t2i_prompts(tok, prompt, grid_h, grid_w)

    request = _image_request(
        tok, [cond, uncond], grid_h, grid_w, steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale,
        seed=seed, **common,
    )
    result = _run(model, request, STAGE_DENOISE, progress, should_cancel)
    return {"codes": _codes(tok, result, grid_h, grid_w), "h": grid_h, "w": grid_w, "thinking": thinking}


def _thinking_output(tok: TextTokenizer, ids: Sequence[int]) -> tuple[list[int], str]:
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
    _text("question", question)
    h, w = _positive("h", h), _positive("w", w)
    prompt = P.understand_prompt(tok, codes, h, w, question)
    request = GenerationRequest(
        prompts=[prompt],
        gen_length=_positive("gen_length", gen_length),
        steps=_positive("steps", steps),
        block_length=_positive("block_length", block_length),
        threshold=threshold,
        temperature=temperature,
        eos_early_stop=eos_early_stop,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        seed=seed,
        sprint=sprint_options(sprint),
    )
    result = _run(model, request, STAGE_DENOISE, progress, should_cancel)
    return tok.decode(result.ids, skip_special_tokens=True).strip()


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
    _text("instruction", instruction)
    h, w = _positive("h", h), _positive("w", w)
    _positive("steps", steps)
    _positive("block_length", block_length)
    if cfg_image_scale < 0:
        raise ModelInputError("cfg_image_scale", f"must be >= 0, got {cfg_image_scale}")
    cond, no_text, no_image = P.edit_prompts(tok, codes, h, w, instruction, with_no_image=cfg_image_scale > 0)
    branches = [cond, no_text] + ([no_image] if no_image is not None else [])
    request = _image_request(
        tok, branches, h, w, steps=steps, block_length=block_length, threshold=threshold,
        temperature=temperature, cfg_scale=cfg_text_scale, cfg_image_scale=cfg_image_scale,
        cfg_rescale=cfg_rescale, seed=seed, sprint=sprint_options(sprint),
    )
    result = _run(model, request, STAGE_DENOISE, progress, should_cancel)
    return {"codes": _codes(tok, result, h, w), "h": h, "w": w}
