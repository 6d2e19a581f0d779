"""Block-diffusion sampler for the LLaDA2.0-Uni backbone (docs/model.md §3): baseline loop, 2-/3-way CFG,
SPRINT, built on a stepper so that an engine can add and remove requests between denoising steps."""

from workers.model.sampler.block_diffusion import block_diffusion_generate
from workers.model.sampler.loop import generate, max_positions
from workers.model.sampler.request import GenerationRequest, GenerationResult, SprintOptions
from workers.model.sampler.state import RequestState, start_request
from workers.model.sampler.stepper import step

__all__ = [
    "GenerationRequest",
    "GenerationResult",
    "RequestState",
    "SprintOptions",
    "block_diffusion_generate",
    "generate",
    "max_positions",
    "start_request",
    "step",
]
