"""`DenoiserActor`: the MoE backbone resident on its device, serving denoising requests with step-level
batching across jobs (`StepBatcher`)."""

from __future__ import annotations

import time

import torch

from workers.engine.actor_info import compute_dtype, describe
from workers.engine.batcher import StepBatcher
from workers.model.backbone import load_backbone
from workers.model.sampler import GenerationRequest, GenerationResult


class DenoiserActor:
    """Async Ray actor: `generate` calls from many jobs share the batcher's steps."""

    def __init__(self, model_path: str, device: str = "cpu", *, max_batch: int = 8, dtype: str | None = None):
        started = time.perf_counter()
        self.device = torch.device(device)
        self.model = load_backbone(model_path, device=self.device, dtype=compute_dtype(self.device, dtype))
        self.load_seconds = time.perf_counter() - started
        self.batcher = StepBatcher(self.model, self.device, max_batch=max_batch)

    async def generate(self, key: str, request: GenerationRequest, stage: str = "denoise") -> GenerationResult:
        return await self.batcher.run(key, request, stage)

    async def progress(self, key: str) -> tuple[str, int, int] | None:
        return self.batcher.progress(key)

    async def settled(self, key: str) -> list[int] | None:
        return self.batcher.settled(key)

    async def cancel(self, key: str) -> bool:
        return self.batcher.cancel(key)

    async def stats(self) -> dict:
        s = self.batcher.stats
        return {**self.batcher.occupancy(), "forwards": s.forwards, "request_steps": s.request_steps,
                "largest_batch": s.largest_batch, "cancelled": s.cancelled, "batch_sizes": dict(s.batch_sizes),
                "step_seconds": dict(s.step_seconds), "torch_threads": torch.get_num_threads()}

    async def describe(self) -> dict:
        return describe("denoiser", self.device, load_seconds=self.load_seconds,
                        dtype=str(next(self.model.parameters()).dtype))
