"""`block_diffusion_generate`: the baseline block-diffusion text loop (docs/model.md §3.1) for one prompt.

A one-request front end to the batched sampler (`workers.model.sampler.generate`), with the special ids as
parameters so that any vocabulary works, tiny ones included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from workers.model.sampler.loop import generate
from workers.model.sampler.request import GenerationRequest, SprintOptions


def block_diffusion_generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    *,
    gen_length: int,
    block_length: int = 32,
    steps: int = 32,
    threshold: float = 0.95,
    mask_id: int,
    eos_id: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    minimal_topk: int = 1,
    eos_early_stop: bool = False,
    seed: int | None = None,
    sprint: SprintOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> list[int]:
    """Generated ids only (no prompt), cut after the first EOS, which is kept (§3.1 step 5).

    `prompt_ids`: a list of ids or a tensor of shape [L] or [1, L]. Greedy by default (temperature 0);
    `sprint` switches on prefix-KV reuse (§3.6).
    """
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 2 and prompt_ids.shape[0] != 1:
            raise ValueError(f"prompt_ids: one prompt expected, got a batch of {prompt_ids.shape[0]}")
        prompt_ids = prompt_ids.reshape(-1).tolist()
    request = GenerationRequest(
        prompts=[[int(i) for i in prompt_ids]], gen_length=gen_length, mask_id=mask_id, eos_id=eos_id,
        block_length=block_length, steps=steps, threshold=threshold, temperature=temperature, top_k=top_k,
        top_p=top_p, minimal_topk=minimal_topk, eos_early_stop=eos_early_stop, seed=seed, sprint=sprint,
    )
    return generate(model, [request], progress=progress, should_cancel=should_cancel)[0].ids
