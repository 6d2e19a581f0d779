"""`DecoderActor`: SigVQ embedder, Z-Image DiT (normal and turbo samplers) and FLUX VAE, resident."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch
from PIL import Image

from workers.engine.actor_info import compute_dtype, describe
from workers.engine.tracking import JobTable
from workers.model.decoder import MODES, ImageDecoder, load_decoder
from workers.model.decoder.transformer import load_transformer
from workers.model.errors import Cancelled, ModelInputError

STAGE_DECODE = "decode"


class DecoderActor:
    """Loads the `default_mode` DiT at start and the other mode's DiT on first use; SigVQ and the VAE are
    shared by both (one copy each on the device)."""

    def __init__(self, model_path: str, device: str = "cpu", *, default_mode: str = "normal",
                 dtype: str | None = None):
        started = time.perf_counter()
        self.model_path = model_path
        self.device = torch.device(device)
        self.dtype = compute_dtype(self.device, dtype)
        first = load_decoder(model_path, mode=default_mode, device=self.device, dtype=self.dtype)
        self.decoders: dict[str, ImageDecoder] = {default_mode: first}
        self.load_seconds = time.perf_counter() - started
        self.jobs = JobTable()
        self._device_lock = asyncio.Lock()  # one decode at a time: each saturates the device

    def _decoder(self, mode: str) -> ImageDecoder:
        if mode not in MODES:
            raise ModelInputError("decoder", f"must be one of {sorted(MODES)}, got {mode!r}")
        if mode not in self.decoders:
            base = next(iter(self.decoders.values()))
            transformer = load_transformer(Path(self.model_path) / MODES[mode].subfolder,
                                           cap_feat_dim=base.sigvq.width, device=self.device, dtype=self.dtype)
            self.decoders[mode] = ImageDecoder(base.sigvq, transformer, base.vae, mode)
        return self.decoders[mode]

    async def decode(self, key: str, codes: list[int], h: int, w: int, *, mode: str = "normal",
                     steps: int | None = None, seed: int | None = None,
                     resolution_multiplier: int = 2) -> Image.Image:
        self.jobs.open(key, STAGE_DECODE)
        try:
            async with self._device_lock:
                if self.jobs.should_cancel(key)():
                    raise Cancelled("cancelled before decoding")
                decoder = await asyncio.to_thread(self._decoder, mode)
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
        return describe("decoder", self.device, load_seconds=self.load_seconds, modes=sorted(self.decoders))
