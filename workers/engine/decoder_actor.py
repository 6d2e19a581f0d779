"""`DecoderActor`: SigVQ embedder, Z-Image DiT (normal and turbo samplers) and FLUX VAE, resident."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from workers.engine.actor_info import compute_dtype, describe
from workers.engine.tracking import JobTable
from workers.model.errors import Cancelled
from workers.model.pipeline import DEFAULT_DECODERS, DecoderSet

STAGE_DECODE = "decode"


class DecoderActor:
    """Both DiTs over one SigVQ embedder and one VAE, loaded at start as the Pipeline loads them (the
    Pipeline's own decoder set; a mode left out of `decoders` loads on first use and then stays)."""

    def __init__(self, model_path: str, device: str = "cpu", *, decoders: Iterable[str] = DEFAULT_DECODERS,
                 dtype: str | None = None):
        started = time.perf_counter()
        self.device = torch.device(device)
        self.decoders = DecoderSet(Path(model_path), self.device, compute_dtype(self.device, dtype))
        for mode in decoders:
            self.decoders.get(mode)
        self.load_seconds = time.perf_counter() - started
        self.jobs = JobTable()
        self._device_lock = asyncio.Lock()  # one decode at a time: each saturates the device

    async def decode(self, key: str, codes: list[int], h: int, w: int, *, mode: str, steps: int, seed: int,
                     resolution_multiplier: int) -> Image.Image:
        self.jobs.open(key, STAGE_DECODE)
        try:
            async with self._device_lock:
                if self.jobs.should_cancel(key)():
                    raise Cancelled("cancelled before decoding")
                decoder = await asyncio.to_thread(self.decoders.get, mode)
                return await asyncio.to_thread(
                    decoder.decode, codes, h, w, steps=steps, seed=seed,
                    resolution_multiplier=resolution_multiplier,
                    progress=self.jobs.reporter(key), should_cancel=self.jobs.should_cancel(key),
                )
        finally:
            self.jobs.close(key)

    async def progress(self, key: str):
        return self.jobs.progress(key)

    async def cancel(self, key: str) -> bool:
        return self.jobs.cancel(key)

    async def describe(self) -> dict:
        return describe("decoder", self.device, load_seconds=self.load_seconds, modes=list(self.decoders.loaded()))
