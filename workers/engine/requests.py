"""The tokenizer actor's text-to-image steps, composed from `workers.model.generation`'s public request
builders (the one place requests are built), so that a job gives the same ids through the engine as through
the in-process Pipeline. Understanding and editing use `generation.understand_request`/`edit_request` as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.model import generation as G
from workers.model import pipeline_inputs as inputs
from workers.model import prompts as P
from workers.model.sampler import GenerationRequest, GenerationResult, SprintOptions
from workers.model.text_tokenizer import TextTokenizer

Sprint = SprintOptions | Mapping[str, Any] | None


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
    G.check_text_to_image(prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, block_length=block_length, mode=mode,
                          thinking_steps=thinking_steps, thinking_gen_length=thinking_gen_length, sprint=sprint)
    cond, _ = P.t2i_prompts(tok, prompt, grid_h, grid_w)
    inputs.check_positions(tok.config, "prompt", len(cond) + grid_h * grid_w)  # as the Pipeline's tokenize stage
    common = dict(block_length=block_length, threshold=threshold, temperature=temperature, seed=seed, sprint=sprint)
    if mode == "thinking":
        return G.STAGE_THINK, G.thinking_phase1_request(
            tok, prompt, thinking_steps=thinking_steps, thinking_gen_length=thinking_gen_length, **common
        )
    return G.STAGE_DENOISE, G.text_to_image_request(
        tok, prompt, grid_h=grid_h, grid_w=grid_w, steps=steps, cfg_scale=cfg_scale, cfg_rescale=cfg_rescale,
        **common,
    )


def text_to_image_phase2_request(
    tok: TextTokenizer,
    prompt: str,
    phase1: GenerationResult,
    *,
    mode: str = "thinking",
    thinking_steps: int = 32,
    thinking_gen_length: int = 4096,
    **image_options,
) -> tuple[GenerationRequest, str]:
    """Thinking mode, phase 2: the image request conditioned on phase 1's text, and that text. Takes the
    same options as the first request; those of phase 1 only are not used."""
    return G.thinking_phase2_request(tok, prompt, phase1.ids, **image_options)
