"""`generate`: run a batch of requests to completion on the stepper, with progress and cancellation."""

from __future__ import annotations

from collections.abc import Callable

import torch

from workers.model.errors import Cancelled
from workers.model.hooks import Progress, ShouldCancel
from workers.model.sampler.request import GenerationRequest, GenerationResult
from workers.model.sampler.state import start_request
from workers.model.sampler.stepper import step



def model_device(model: torch.nn.Module) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def max_positions(model: torch.nn.Module) -> int | None:
    """The backbone's `max_position_embeddings` (config.json), or None for a model without that setting."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def generate(
    model: torch.nn.Module,
    requests: list[GenerationRequest],
    *,
    progress: Progress | None = None,
    should_cancel: ShouldCancel | None = None,
    stage: str = "denoise",
    settled: Callable[[int, list[int]], None] | None = None,
) -> list[GenerationResult]:
    """Generate for independent requests together; results in request order.

    `progress(stage, step, total)` is called after every batched step with the steps done and planned,
    summed over the requests (a block that ends early counts as all of its steps, so the last call is
    (total, total)). `should_cancel()` is checked before every step; True raises `Cancelled`.
    `settled(index, ids)` is called whenever a request's settled ids (`RequestState.settled_ids`: its finished
    blocks, then its whole result) grow.
    """
    device = model_device(model)
    limit = max_positions(model)
    states = [start_request(r, device, max_positions=limit) for r in requests]
    told = [0] * len(states)
    while not all(s.done for s in states):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"cancelled during {stage}")
        step(model, states)
        if progress is not None:
            done = sum(s.progress()[0] for s in states)
            total = sum(s.progress()[1] for s in states)
            progress(stage, done, total)
        if settled is not None:
            for index, state in enumerate(states):
                ids = state.settled_ids()
                if len(ids) > told[index]:
                    told[index] = len(ids)
                    settled(index, ids)
    return [s.result() for s in states]
