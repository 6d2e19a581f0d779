"""`TokenizerActor`: text tokenizer, prompt building and SigLIP-VQ encoding of input images, resident."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import torch

from workers.engine.actor_info import compute_dtype, describe
from workers.engine.tracking import JobTable
from workers.model import generation as G
from workers.model import pipeline_inputs as inputs
from workers.model.config import BackboneConfig
from workers.model.errors import Cancelled
from workers.model.image_prep import understanding_resize
from workers.model.image_tokenizer import load_image_tokenizer
from workers.model.sampler import GenerationRequest, GenerationResult
from workers.model.tasks import EditTask, TextToImageTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer

STAGE_TOKENIZE = "tokenize"  # the Pipeline's stage name for text and image tokenisation


class TokenizerActor:
    def __init__(self, model_path: str, device: str = "cpu", *, dtype: str | None = None):
        started = time.perf_counter()
        self.device = torch.device(device)
        config = BackboneConfig.from_file(Path(model_path) / "config.json")
        self.tok = TextTokenizer.from_folder(model_path, config)
        self.images = load_image_tokenizer(model_path, device=self.device, dtype=compute_dtype(self.device, dtype))
        self.load_seconds = time.perf_counter() - started
        self.jobs = JobTable()
        self._device_lock = asyncio.Lock()  # one image encode at a time on the device

    # -- text-to-image ----------------------------------------------------------------------------------
    async def text_to_image_request(self, key: str, task: TextToImageTask) -> tuple[str, GenerationRequest]:
        return G.text_to_image_first_request(self.tok, task)

    async def thinking_phase2_request(self, key: str, task: TextToImageTask,
                                      phase1: GenerationResult) -> tuple[GenerationRequest, str]:
        return G.thinking_phase2_request(self.tok, task, phase1.ids)

    async def image_codes(self, key: str, result: GenerationResult, grid_h: int, grid_w: int) -> list[int]:
        return G.image_codes(self.tok, result, grid_h, grid_w)

    # -- understanding / editing ------------------------------------------------------------------------
    # Images arrive as the caller gave them (PIL image or encoded bytes) and are checked and prepared
    # exactly as the Pipeline's tokenize stage does.
    async def understand_request(self, key: str, image, task: UnderstandTask) -> tuple[GenerationRequest, int, int]:
        codes, h, w = await self._encode(key, understanding_resize(inputs.open_image(image, "image")))
        return G.understand_request(self.tok, task, codes, h, w), h, w

    async def edit_request(self, key: str, image, task: EditTask) -> tuple[GenerationRequest, int, int]:
        source = inputs.edit_source(inputs.open_image(image, "image"), crop=task.crop, base=task.crop_base)
        codes, h, w = await self._encode(key, source)
        return G.edit_request(self.tok, task, codes, h, w), h, w

    async def answer_text(self, key: str, result: GenerationResult) -> str:
        return G.answer_text(self.tok, result)

    async def partial_answer(self, key: str, ids: list[int]) -> str:
        return G.partial_answer(self.tok, ids)

    async def _encode(self, key: str, image):
        self.jobs.open(key, STAGE_TOKENIZE)
        try:
            async with self._device_lock:
                if self.jobs.should_cancel(key)():
                    raise Cancelled("cancelled before encoding")
                codes, h, w = await asyncio.to_thread(self.images.encode, image)
            self.jobs.reporter(key)(STAGE_TOKENIZE, 1, 1)
            return codes, h, w
        finally:
            self.jobs.close(key)

    # -- polled by the caller ---------------------------------------------------------------------------
    async def progress(self, key: str):
        return self.jobs.progress(key)

    async def cancel(self, key: str) -> bool:
        return self.jobs.cancel(key)

    async def describe(self) -> dict:
        return describe("tokenizer", self.device, load_seconds=self.load_seconds)
