"""`Pipeline`: the user-level API over the model runtime — text-to-image, understanding, editing.

    pipe = Pipeline.from_pretrained("/models/LLaDA2.0-Uni")          # or the tiny checkpoint
    pipe.generate_image("a red fox in the snow", width=1024, height=1024, seed=0).image.save("fox.png")
    pipe.understand_image("photo.jpg", "What is in this picture?").text
    pipe.edit_image(Image.open("photo.jpg"), "make it night").image
    pipe.text_to_image(TextToImageTask("a red fox", seed=0))            # the same, as a typed task

Every component is loaded once and stays resident (`pipe.text_tokenizer`, `pipe.backbone`,
`pipe.image_tokenizer`, `pipe.turbo_decoder`, `pipe.decoder`); the engine's stage actors use them directly.
Each call runs three stages — tokenize, denoise (the backbone's block diffusion), decode (SigVQ → DiT → VAE) —
reports `progress(stage, step, total)`, checks `should_cancel()` between steps (raising `Cancelled`) and
returns its per-stage wall-clock seconds in `.timings`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from workers.model import generation, image_prep
from workers.model import pipeline_inputs as inputs
from workers.model.backbone import LLaDA2MoeModelLM, load_backbone
from workers.model.config import BackboneConfig
from workers.model.decoder import MODES as DECODER_MODES
from workers.model.decoder import ImageDecoder, load_decoder
from workers.model.errors import ModelInputError
from workers.model.hooks import Answer, Progress, ShouldCancel, StageClock
from workers.model.image_tokenizer import ImageTokenizer, load_image_tokenizer
from workers.model.sampler import GenerationRequest, GenerationResult, generate
from workers.model.tasks import EditTask, KeywordTasks, TextToImageTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer

STAGES = ("tokenize", "denoise", "decode")
# Decoders loaded by `from_pretrained` unless told otherwise: both, so that no request pays a load (the
# turbo and normal DiTs share one SigVQ embedder and one VAE). Pass `decoders=("turbo",)` to save the
# normal DiT's memory (~12 GB in bf16); a decoder not loaded up front is loaded on first use and then kept.
DEFAULT_DECODERS = ("turbo", "normal")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on accelerators (the checkpoint's own dtype, as the reference runs); fp32 on CPU, where bf16
    matmuls are slow and fp16 is ~100x slower."""
    return torch.bfloat16 if device.type != "cpu" else torch.float32


_DTYPE_NAMES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name not in _DTYPE_NAMES:
        raise ModelInputError("dtype", f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[name]


@dataclass
class ImageResult:
    """An image task's result. `codes`/`grid` are the backbone's image tokens (no offset), `seed` the seed
    actually used (drawn at random when none was given), so that any result can be reproduced."""

    image: Image.Image
    timings: dict[str, float]
    codes: list[int]
    grid: tuple[int, int]
    seed: int
    thinking: str | None = None
    text: None = None


@dataclass
class TextResult:
    """An understanding result: the answer text and the per-stage timings."""

    text: str
    timings: dict[str, float]
    grid: tuple[int, int]
    thinking: None = None
    image: None = None


class DecoderSet:
    """The turbo and normal decoders over one shared SigVQ embedder and VAE; each DiT loaded once, on
    `from_pretrained` or on first use, then resident. Thread-safe, so stage actors may share it."""

    def __init__(self, root: Path, device: torch.device, dtype: torch.dtype):
        self.root, self.device, self.dtype = root, device, dtype
        self._loaded: dict[str, ImageDecoder] = {}
        self._lock = threading.Lock()

    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def get(self, mode: str) -> ImageDecoder:
        if mode not in DECODER_MODES:
            raise ModelInputError("decoder", f"must be one of {sorted(DECODER_MODES)}, got {mode!r}")
        with self._lock:
            if mode not in self._loaded:
                if self._loaded:  # a later mode reuses the first one's SigVQ embedder and VAE
                    first = next(iter(self._loaded.values()))
                    self._loaded[mode] = first.load_sibling(self.root, mode)
                else:
                    self._loaded[mode] = load_decoder(self.root, mode=mode, device=self.device, dtype=self.dtype)
            return self._loaded[mode]


def _stage_devices(device: torch.device, stage_devices: Mapping[str, Any] | None) -> dict[str, torch.device]:
    placed = {stage: device for stage in STAGES}
    for stage, where in (stage_devices or {}).items():
        if stage not in placed:
            raise ModelInputError("stage_devices", f"unknown stage {stage!r}; stages are {list(STAGES)}")
        placed[stage] = torch.device(where)
    return placed


class Pipeline(KeywordTasks):
    """LLaDA2.0-Uni end to end. Build it with `from_pretrained`; components are public attributes."""

    def __init__(
        self,
        *,
        config: BackboneConfig,
        text_tokenizer: TextTokenizer,
        backbone: LLaDA2MoeModelLM,
        image_tokenizer: ImageTokenizer | None,
        decoders: DecoderSet | None,
        devices: Mapping[str, torch.device],
        path: Path | None = None,
    ):
        self.config = config
        self.text_tokenizer = text_tokenizer
        self.backbone = backbone
        self.image_tokenizer = image_tokenizer
        self._decoders = decoders
        self.devices = dict(devices)
        self.path = path

    # ---- loading ---------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        stage_devices: Mapping[str, torch.device | str] | None = None,
        decoders: Iterable[str] = DEFAULT_DECODERS,
    ) -> "Pipeline":
        """Load the checkpoint folder in the official layout (docs/model.md §6).

        `device`: default CUDA when available, else CPU. `dtype`: default bf16 on accelerators and fp32 on
        CPU (a torch dtype or its name). `stage_devices` places stages apart, e.g.
        `{"denoise": "cuda:0", "decode": "cuda:1"}`: "tokenize" holds the SigLIP-VQ image tokenizer, "denoise"
        the backbone, "decode" the decoders. Loaded eagerly: text tokenizer, backbone, image tokenizer and
        the decoders named in `decoders` (both by default); any other decoder on first use. Every weight is
        loaded strictly and memory-mapped straight to its device and dtype (`workers.model.weights`).
        """
        root = Path(path)
        if not (root / "config.json").is_file():
            raise FileNotFoundError(f"{root}: not a LLaDA2.0-Uni checkpoint folder (no config.json)")
        base = torch.device(device) if device is not None else default_device()
        devices = _stage_devices(base, stage_devices)
        dtype = parse_dtype(dtype)

        def dtype_on(stage: str) -> torch.dtype:
            return dtype or default_dtype(devices[stage])

        config = BackboneConfig.from_file(root / "config.json")
        text_tokenizer = TextTokenizer.from_folder(root, config)
        backbone = load_backbone(root, device=devices["denoise"], dtype=dtype_on("denoise"))
        image_tokenizer = None
        if (root / "image_tokenizer").is_dir():
            image_tokenizer = load_image_tokenizer(root, device=devices["tokenize"], dtype=dtype_on("tokenize"))
        decoder_set = DecoderSet(root, devices["decode"], dtype_on("decode"))
        for mode in decoders:
            decoder_set.get(mode)
        return cls(config=config, text_tokenizer=text_tokenizer, backbone=backbone,
                   image_tokenizer=image_tokenizer, decoders=decoder_set, devices=devices, path=root)

    def get_decoder(self, mode: str = "turbo") -> ImageDecoder:
        """The decoder for `mode` ("turbo" or "normal"), loaded now if it was not loaded up front."""
        if self._decoders is None:
            raise RuntimeError("this pipeline has no decoders")
        return self._decoders.get(mode)

    @property
    def turbo_decoder(self) -> ImageDecoder:
        return self.get_decoder("turbo")

    @property
    def decoder(self) -> ImageDecoder:
        """The normal (50-step) decoder."""
        return self.get_decoder("normal")

    @property
    def loaded_decoders(self) -> tuple[str, ...]:
        return self._decoders.loaded() if self._decoders is not None else ()

    def _require_image_tokenizer(self) -> ImageTokenizer:
        if self.image_tokenizer is None:
            raise RuntimeError(f"{self.path}: the checkpoint has no image_tokenizer/ folder")
        return self.image_tokenizer

    # ---- tasks (the keyword forms, generate_image & co., come from KeywordTasks) ---------------------
    def text_to_image(self, task: TextToImageTask, *, progress: Progress | None = None,
                      should_cancel: ShouldCancel | None = None) -> ImageResult:
        """An image of exactly `task.width` x `task.height` pixels (docs/model.md §3.3, §5)."""
        task = task.checked()
        decoder = self.get_decoder(task.decoder)
        clock = StageClock(progress, should_cancel)
        steps = generation.LocalSteps(self.backbone, self.text_tokenizer, progress, should_cancel)
        drawn = generation.text_to_image_codes(steps, task, clock)
        image = clock.run("decode", lambda: decoder.decode(
            drawn.codes, task.grid_h, task.grid_w, steps=task.decoder_steps, seed=task.seed,
            resolution_multiplier=task.resolution_multiplier, progress=progress, should_cancel=should_cancel,
        ))
        return ImageResult(image=image, timings=clock.timings, codes=drawn.codes, grid=(task.grid_h, task.grid_w),
                           seed=task.seed, thinking=drawn.thinking)

    def understand(self, image: Image.Image | bytes | str | Path, task: UnderstandTask, *,
                   progress: Progress | None = None, should_cancel: ShouldCancel | None = None,
                   answer: Answer | None = None) -> TextResult:
        """The answer to `task.question` about `image` (docs/model.md §3.4); `answer` sees it grow block by
        block."""
        tokenizer = self._require_image_tokenizer()
        task = task.checked()
        clock = StageClock(progress, should_cancel)

        def tokenize() -> tuple[GenerationRequest, int, int]:
            codes, h, w = tokenizer.encode(image_prep.understanding_resize(inputs.open_image(image, "image")))
            request = generation.understand_request(self.text_tokenizer, task, codes, h, w)
            clock.report("tokenize")
            return request, h, w

        request, h, w = clock.run("tokenize", tokenize)
        settled = None if answer is None else (
            lambda _, ids: answer(generation.partial_answer(self.text_tokenizer, ids)))
        text = clock.run("denoise", lambda: generation.answer_text(
            self.text_tokenizer, self._generate(request, progress, should_cancel, settled)))
        return TextResult(text=text, timings=clock.timings, grid=(h, w))

    def edit(self, image: Image.Image | bytes | str | Path, task: EditTask, *, progress: Progress | None = None,
             should_cancel: ShouldCancel | None = None) -> ImageResult:
        """`image` edited by `task.instruction` (docs/model.md §3.5), on the grid of its crop."""
        tokenizer = self._require_image_tokenizer()
        task = task.checked()
        decoder = self.get_decoder(task.decoder)
        clock = StageClock(progress, should_cancel)

        def tokenize() -> tuple[GenerationRequest, int, int]:
            source = inputs.edit_source(inputs.open_image(image, "image"), crop=task.crop, base=task.crop_base)
            codes, h, w = tokenizer.encode(source)
            request = generation.edit_request(self.text_tokenizer, task, codes, h, w)
            clock.report("tokenize")
            return request, h, w

        request, h, w = clock.run("tokenize", tokenize)
        codes = clock.run("denoise", lambda: generation.image_codes(
            self.text_tokenizer, self._generate(request, progress, should_cancel), h, w))
        picture = clock.run("decode", lambda: decoder.decode(
            codes, h, w, steps=task.decoder_steps, seed=task.seed, resolution_multiplier=task.resolution_multiplier,
            progress=progress, should_cancel=should_cancel,
        ))
        return ImageResult(image=picture, timings=clock.timings, codes=codes, grid=(h, w), seed=task.seed)

    def _generate(self, request: GenerationRequest, progress: Progress | None,
                  should_cancel: ShouldCancel | None, settled=None) -> GenerationResult:
        return generate(self.backbone, [request], progress=progress, should_cancel=should_cancel,
                        stage=generation.STAGE_DENOISE, settled=settled)[0]
