"""The sampler requests of each task, built as `workers.model.generation` builds them, so that a job gives the
same ids through the engine as through the in-process Pipeline.

`generation.py` builds each request inside the function that also runs it, so its request-building steps
(prompt builders, `_image_request`, `_codes`, `_thinking_output`, argument checks) are used here one by
one, in the same order and with the same defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from workers.model import generation as G
from workers.model import prompts as P
from workers.model.errors import ModelInputError
from workers.model.sampler import GenerationRequest, GenerationResult, SprintOptions
from workers.model.text_tokenizer import TextTokenizer

Sprint = SprintOptions | Mapping[str, Any] | None


def check_length(tok: TextTokenizer, field_name: str, tokens: int) -> None:
    """The Pipeline's size check: prompt plus generated positions must fit the backbone's positions."""
    limit = tok.config.max_position_embeddings
    if tokens > limit:
        raise ModelInputError(field_name, f"the request needs {tokens} positions; the backbone has {limit}")


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
    threshold: float = G.DEFAULT_THRESHOLD,
    temperature: float = G.DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: Sprint = None,
) -> tuple[str, GenerationRequest]:
    """(stage, request) of the first denoise phase: the image itself (normal) or the thinking text."""
    G._text("prompt", prompt)
    grid_h, grid_w = G._positive("grid_h", grid_h), G._positive("grid_w", grid_w)
    G._positive("steps", steps)
    G._positive("block_length", block_length)
    if mode not in G.MODES:
        raise ModelInputError("mode", f"must be one of {G.MODES}, got {mode!r}")
    options = G.sprint_options(sprint)
    common = dict(block_length=block_length, threshold=threshold, temperature=temperature, sprint=options)
    cond, uncond = P.t2i_prompts(tok, prompt, grid_h, grid_w)
    check_length(tok, "prompt", len(cond) + grid_h * grid_w)  # as the Pipeline's tokenize stage
    if mode == "thinking":
        G._positive("thinking_steps", thinking_steps)
        G._positive("thinking_gen_length", thinking_gen_length)
        # §3.3 phase 1: text diffusion without CFG or vocabulary restriction; <boi> stops it like EOS.
        request = GenerationRequest(
            prompts=[P.thinking_phase1_prompt(tok, prompt)],
            gen_length=thinking_gen_length,
            steps=thinking_steps,
            mask_id=tok.mask_id,
            eos_id=tok.eos_id,
            stop_ids=(tok.boi_id,),
            seed=seed,
            **common,
        )
        return G.STAGE_THINK, request
    return G.STAGE_DENOISE, _t2i_image_request(tok, cond, uncond, grid_h, grid_w, steps, cfg_scale, cfg_rescale,
                                               seed, common)


def text_to_image_phase2_request(
    tok: TextTokenizer,
    prompt: str,
    phase1: GenerationResult,
    *,
    grid_h: int,
    grid_w: int,
    steps: int = 8,
    block_length: int = 32,
    cfg_scale: float = 2.0,
    threshold: float = G.DEFAULT_THRESHOLD,
    temperature: float = G.DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: Sprint = None,
    **_unused_phase1_options,
) -> tuple[GenerationRequest, str]:
    """Thinking mode, phase 2: the image request conditioned on phase 1's text, and that text."""
    through_boi, thinking = G._thinking_output(tok, phase1.ids)
    cond, uncond = P.thinking_phase2_prompts(tok, prompt, through_boi, grid_h, grid_w)
    common = dict(block_length=block_length, threshold=threshold, temperature=temperature,
                  sprint=G.sprint_options(sprint))
    request = _t2i_image_request(tok, cond, uncond, grid_h, grid_w, steps, cfg_scale, cfg_rescale, seed, common)
    return request, thinking


def _t2i_image_request(tok, cond, uncond, grid_h, grid_w, steps, cfg_scale, cfg_rescale, seed, common):
    return G._image_request(
        tok, [cond, uncond], grid_h, grid_w, steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale,
        seed=seed, **common,
    )


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
    threshold: float = G.DEFAULT_THRESHOLD,
    temperature: float = G.DEFAULT_TEMPERATURE,
    eos_early_stop: bool = False,
    seed: int | None = None,
    sprint: Sprint = None,
) -> GenerationRequest:
    G._text("question", question)
    h, w = G._positive("h", h), G._positive("w", w)
    return GenerationRequest(
        prompts=[P.understand_prompt(tok, codes, h, w, question)],
        gen_length=G._positive("gen_length", gen_length),
        steps=G._positive("steps", steps),
        block_length=G._positive("block_length", block_length),
        threshold=threshold,
        temperature=temperature,
        eos_early_stop=eos_early_stop,
        mask_id=tok.mask_id,
        eos_id=tok.eos_id,
        seed=seed,
        sprint=G.sprint_options(sprint),
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
    threshold: float = G.DEFAULT_THRESHOLD,
    temperature: float = G.DEFAULT_TEMPERATURE,
    cfg_rescale: float = 0.0,
    seed: int | None = None,
    sprint: Sprint = None,
) -> GenerationRequest:
    G._text("instruction", instruction)
    h, w = G._positive("h", h), G._positive("w", w)
    G._positive("steps", steps)
    G._positive("block_length", block_length)
    if cfg_image_scale < 0:
        raise ModelInputError("cfg_image_scale", f"must be >= 0, got {cfg_image_scale}")
    cond, no_text, no_image = P.edit_prompts(tok, codes, h, w, instruction, with_no_image=cfg_image_scale > 0)
    branches = [cond, no_text] + ([no_image] if no_image is not None else [])
    return G._image_request(
        tok, branches, h, w, steps=steps, block_length=block_length, threshold=threshold,
        temperature=temperature, cfg_scale=cfg_text_scale, cfg_image_scale=cfg_image_scale,
        cfg_rescale=cfg_rescale, seed=seed, sprint=G.sprint_options(sprint),
    )


def image_codes(tok: TextTokenizer, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
    return G._codes(tok, result, grid_h, grid_w)


def answer_text(tok: TextTokenizer, result: GenerationResult) -> str:
    return tok.decode(result.ids, skip_special_tokens=True).strip()
