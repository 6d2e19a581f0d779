"""`Pipeline`: the user-level API over the model runtime — text-to-image, understanding, editing.

    pipe = Pipeline.from_pretrained("/models/LLaDA2.0-Uni")          # or the tiny checkpoint
    pipe.generate_image("a red fox in the snow", width=1024, height=1024, seed=0).image.save("fox.png")
    pipe.understand_image("photo.jpg", "What is in this picture?").text
    pipe.edit_image(Image.open("photo.jpg"), "make it night").image

Every component is loaded once and stays resident (`pipe.text_tokenizer`, `pipe.backbone`,
`pipe.image_tokenizer`, `pipe.turbo_decoder`, `pipe.decoder`); the engine's stage actors use them directly.
Each call runs three stages — tokenize, denoise (the backbone's block diffusion), decode (SigVQ → DiT → VAE) —
reports `progress(stage, step, total)`, checks `should_cancel()` between steps (raising `Cancelled`) and
returns its per-stage wall-clock seconds in `.timings`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from workers.model import generation, image_prep
from workers.model import pipeline_inputs as inputs
from workers.model import prompts as P
from workers.model.backbone import LLaDA2MoeModelLM, load_backbone
from workers.model.config import BackboneConfig
from workers.model.decoder import MODES as DECODER_MODES
from workers.model.decoder import ImageDecoder, load_decoder
from workers.model.decoder.pipeline import DEFAULT_RESOLUTION_MULTIPLIER
from workers.model.errors import ModelInputError
from workers.model.hooks import Progress, ShouldCancel, StageClock
from workers.model.image_tokenizer import ImageTokenizer, load_image_tokenizer
from workers.model.sampler import SprintOptions
from workers.model.text_tokenizer import TextTokenizer

Sprint = SprintOptions | Mapping[str, Any] | bool | None

STAGES = ("tokenize", "denoise", "decode")
# Decoders loaded by `from_pretrained` unless told otherwise: both, so that no request pays a load (the
# turbo and normal DiTs share one SigVQ embedder and one VAE). Pass `decoders=("turbo",)` to save the
# normal DiT's memory (~12 GB in bf16); a decoder not loaded up front is loaded on first use and then kept.
DEFAULT_DECODERS = ("turbo", "normal")
# Image sides for text-to-image, as the service accepts them (shared/jobs.py): 128 px is the smallest side
# whose backbone grid (side / 32) is still >= 4; 2048 px keeps one image at <= 4096 tokens.
IMAGE_SIDE_MIN = 128
IMAGE_SIDE_MAX = 2048
PATCH = 16  # pixels per SigLIP-VQ token side (MODEL_SPEC §2.4); a backbone grid cell is PATCH x rmul


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


class Pipeline:
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
        """Load the checkpoint folder in the official layout (MODEL_SPEC §6).

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

    # ---- tasks -----------------------------------------------------------------------------------------
    def generate_image(
        self,
        prompt: str,
        *,
        width: int = 1024,
        height: int = 1024,
        steps: int = 8,
        cfg_scale: float = 2.0,
        block_length: int = 32,
        mode: str = "normal",
        thinking_steps: int = 32,
        thinking_gen_length: int = 4096,
        threshold: float = generation.DEFAULT_THRESHOLD,
        decoder: str = "turbo",
        decoder_steps: int | None = None,
        resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> ImageResult:
        """Text to image (MODEL_SPEC §3.3, §5): an image of exactly `width` x `height` pixels.

        Defaults are the README's (steps 8, cfg_scale 2.0, block 32, 1024²; turbo decoder, 8 steps).
        The backbone fills a (height / 32) x (width / 32) grid (sides / (16·resolution_multiplier)).
        `mode="thinking"` first writes a text plan (`.thinking`), then the image.
        """
        cell = inputs.check_resolution_multiplier(resolution_multiplier) * PATCH
        grid_h = inputs.check_side("height", height, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX) // cell
        grid_w = inputs.check_side("width", width, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX) // cell
        decode_with = self._decoder_and_steps(decoder, decoder_steps)
        seed = resolve_seed(seed)
        stages = StageClock(progress, should_cancel)

        def tokenize() -> None:
            # The prompt ids are built again inside the sampler call; here they size-check the request.
            cond, _ = P.t2i_prompts(self.text_tokenizer, inputs.check_text("prompt", prompt), grid_h, grid_w)
            inputs.check_positions(self.config, "prompt", len(cond) + grid_h * grid_w)
            stages.report("tokenize")

        stages.run("tokenize", tokenize)
        phases: dict[str, float] = {}
        tokens = stages.run("denoise", lambda: generation.text_to_image_tokens(
            self.backbone, self.text_tokenizer, prompt, grid_h=grid_h, grid_w=grid_w, steps=steps,
            block_length=block_length, cfg_scale=cfg_scale, mode=mode, thinking_steps=thinking_steps,
            thinking_gen_length=thinking_gen_length, threshold=threshold, seed=seed,
            sprint=sprint_setting(sprint), progress=progress, should_cancel=should_cancel, phase_seconds=phases,
        ))
        stages.carve("denoise", generation.STAGE_THINK, phases.get(generation.STAGE_THINK, 0.0))
        image = stages.run("decode", lambda: decode_with[0].decode(
            tokens["codes"], grid_h, grid_w, steps=decode_with[1], seed=seed,
            resolution_multiplier=resolution_multiplier, progress=progress, should_cancel=should_cancel,
        ))
        return ImageResult(image=image, timings=stages.timings, codes=tokens["codes"], grid=(grid_h, grid_w),
                           seed=seed, thinking=tokens.get("thinking"))

    def understand_image(
        self,
        image: Image.Image | bytes | str | Path,
        question: str,
        *,
        steps: int = 32,
        gen_length: int = 2048,
        block_length: int = 32,
        threshold: float = generation.DEFAULT_THRESHOLD,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> TextResult:
        """Answer `question` about `image` (a PIL image, encoded bytes or a file path; MODEL_SPEC §3.4).

        The image is smart-resized (sides multiples of 32, 128²..800² pixels) and tokenised at 16 px per
        token. Defaults: steps 32, gen_length 2048, block 32, threshold 0.95 (`GH:scripts/mmu_understand.py`).
        """
        tokenizer = self._require_image_tokenizer()
        inputs.check_text("question", question)
        stages = StageClock(progress, should_cancel)

        def tokenize() -> tuple[list[int], int, int]:
            picture = inputs.open_image(image, "image")
            encoded = tokenizer.encode(image_prep.understanding_resize(picture))
            inputs.check_positions(self.config, "image", len(encoded[0]) + gen_length)
            stages.report("tokenize")
            return encoded

        codes, h, w = stages.run("tokenize", tokenize)
        text = stages.run("denoise", lambda: generation.understand_tokens(
            self.backbone, self.text_tokenizer, codes, h, w, question, steps=steps, gen_length=gen_length,
            block_length=block_length, threshold=threshold, seed=seed, sprint=sprint_setting(sprint),
            progress=progress, should_cancel=should_cancel,
        ))
        return TextResult(text=text, timings=stages.timings, grid=(h, w))

    def edit_image(
        self,
        image: Image.Image | bytes | str | Path,
        instruction: str,
        *,
        steps: int = 8,
        block_length: int = 32,
        cfg_text_scale: float = 4.0,
        cfg_image_scale: float = 0.0,
        threshold: float = generation.DEFAULT_THRESHOLD,
        decoder: str = "turbo",
        decoder_steps: int | None = None,
        resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER,
        crop: image_prep.EditCrop | str = image_prep.EditCrop.COVER,
        crop_base: int = inputs.EDIT_CROP_BASE,
        seed: int | None = None,
        sprint: Sprint = None,
        progress: Progress | None = None,
        should_cancel: ShouldCancel | None = None,
    ) -> ImageResult:
        """Edit `image` by `instruction` (MODEL_SPEC §3.5).

        The source is cropped to the closest of the reference's crop sizes (<= (crop_base/32)² cells of
        32 px, aspect <= 4; `crop` = "cover" resizes to cover it first, "reference" crops the un-resized
        image as the official code does), tokenised at 16 px per token, edited on the same grid and decoded:
        the result is crop size x resolution_multiplier — with the defaults a 512² crop gives 1024², as the
        reference. Defaults: steps 8, cfg_text_scale 4.0, cfg_image_scale 0.0 (README).
        """
        tokenizer = self._require_image_tokenizer()
        inputs.check_text("instruction", instruction)
        inputs.check_resolution_multiplier(resolution_multiplier)
        decode_with = self._decoder_and_steps(decoder, decoder_steps)
        seed = resolve_seed(seed)
        stages = StageClock(progress, should_cancel)

        def tokenize() -> tuple[list[int], int, int]:
            source = inputs.edit_source(inputs.open_image(image, "image"), crop=crop, base=crop_base)
            encoded = tokenizer.encode(source)
            inputs.check_positions(self.config, "image", 2 * len(encoded[0]))
            stages.report("tokenize")
            return encoded

        codes, h, w = stages.run("tokenize", tokenize)
        tokens = stages.run("denoise", lambda: generation.edit_tokens(
            self.backbone, self.text_tokenizer, codes, h, w, instruction, steps=steps, block_length=block_length,
            cfg_text_scale=cfg_text_scale, cfg_image_scale=cfg_image_scale, threshold=threshold, seed=seed,
            sprint=sprint_setting(sprint), progress=progress, should_cancel=should_cancel,
        ))
        picture = stages.run("decode", lambda: decode_with[0].decode(
            tokens["codes"], h, w, steps=decode_with[1], seed=seed, resolution_multiplier=resolution_multiplier,
            progress=progress, should_cancel=should_cancel,
        ))
        return ImageResult(image=picture, timings=stages.timings, codes=tokens["codes"], grid=(h, w), seed=seed)

    # ---- helpers ---------------------------------------------------------------------------------------
    def _decoder_and_steps(self, mode: str, steps: int | None) -> tuple[ImageDecoder, int]:
        """Check the decoder choice and its steps before any work, then fetch (or load) that decoder."""
        steps = inputs.check_decoder(mode, steps)
        return self.get_decoder(mode), steps


def resolve_seed(seed: int | None) -> int:
    """The seed to use: `seed` checked, or a fresh random one (returned in the result, for replay)."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ModelInputError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
    return seed


def sprint_setting(sprint: Sprint) -> SprintOptions | Mapping[str, Any] | None:
    """`True` = SPRINT with the sampler's defaults (the official README's, MODEL_SPEC §3.6: keep 0.5, warm-up 1;
    the service's too), `False`/None = off; options pass through as given."""
    if sprint is True:
        return SprintOptions()
    if sprint is False:
        return None
    return sprint
