"""The tokenizer actor's text-to-image steps: `workers.model.generation`'s public request builders (the one
place requests and the thinking phases are built), so that a job gives the same ids through the engine as
through the in-process Pipeline. Understanding and editing use `generation.understand_request`/`edit_request` as they are.
"""

from __future__ import annotations

from workers.model import generation as G
from workers.model import pipeline_inputs as inputs
from workers.model import prompts as P
from workers.model.sampler import GenerationRequest, GenerationResult
from workers.model.text_tokenizer import TextTokenizer


def text_to_image_first_request(tok: TextTokenizer, prompt: str, *, grid_h: int, grid_w: int,
                                **options) -> tuple[str, GenerationRequest]:
    """(stage, request) of the first denoise phase (`generation.text_to_image_first_request`), with the
    prompt's length checked as the Pipeline's tokenize stage checks it."""
    stage, request = G.text_to_image_first_request(tok, prompt, grid_h=grid_h, grid_w=grid_w, **options)
    cond, _ = P.t2i_prompts(tok, prompt, grid_h, grid_w)
    inputs.check_positions(tok.config, "prompt", len(cond) + grid_h * grid_w)
    return stage, request


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
