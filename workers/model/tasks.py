"""The model's three tasks as typed values: each task's parameters with their defaults, declared once, and one
check that turns a task as asked into a task as run (the role SGLang's `io_struct` plays).

    task = TextToImageTask("a red fox in the snow", width=1024, height=1024, seed=0).checked()
    task.grid_h, task.grid_w, task.decoder_steps, task.seed        # resolved: no None left to guess at

The request builders (`generation`), the Pipeline, the Ray engine and the worker's executors all take these;
the service's own copy of the defaults (`shared.jobs`, the API boundary) is held equal to them by a test.
Defaults are the reference's (docs/model.md §3.3–3.5: the official README and scripts). `checked()` raises
`ModelInputError` naming the field; what only the model's config can judge (the positions a request needs)
is checked by the request builders, which build the prompt anyway.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from workers.model import image_prep
from workers.model import pipeline_inputs as inputs
from workers.model.decoder.pipeline import DEFAULT_RESOLUTION_MULTIPLIER
from workers.model.errors import ModelInputError
from workers.model.sampler import SprintOptions

MODES = ("normal", "thinking")
# docs/model.md §3.1: the loop's own defaults (threshold 0.95, temperature 0 = greedy). The HF task functions
# expose no temperature; greedy is the reference behaviour, so `seed` only matters with temperature > 0.
DEFAULT_THRESHOLD = 0.95
DEFAULT_TEMPERATURE = 0.0
# Image sides for text-to-image, as the service accepts them (shared/jobs.py): 128 px is the smallest side
# whose backbone grid (side / 32) is still >= 4; 2048 px keeps one image at <= 4096 tokens.
IMAGE_SIDE_MIN = 128
IMAGE_SIDE_MAX = 2048
PATCH = 16  # pixels per SigLIP-VQ token side (docs/model.md §2.4); a backbone grid cell is PATCH x rmul

# What `sprint` may be given as: the options, a mapping of their fields, True (the defaults) or False/None (off).
Sprint = SprintOptions | Mapping[str, Any] | bool | None


def sprint_options(sprint: Sprint) -> SprintOptions | None:
    """SPRINT options from any accepted form (None = SPRINT off); `True` = the sampler's defaults (the official
    README's, docs/model.md §3.6: keep 0.5, warm-up 1; the service's too)."""
    if sprint is None or sprint is False:
        return None
    if sprint is True:
        return SprintOptions()
    if isinstance(sprint, SprintOptions):
        return sprint
    if not isinstance(sprint, Mapping):
        raise ModelInputError("sprint", f"expected SprintOptions, a mapping or None, got {type(sprint).__name__}")
    known = {f.name for f in fields(SprintOptions)}
    unknown = sorted(set(sprint) - known)
    if unknown:
        raise ModelInputError("sprint", f"unknown option(s) {unknown}; known: {sorted(known)}")
    return SprintOptions(**sprint)


def check_positive(field: str, value: Any) -> int:
    """`value` as an integer >= 1, or a `ModelInputError` naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelInputError(field, f"must be an integer >= 1, got {value!r}")
    return value


def resolve_seed(seed: int | None) -> int:
    """The seed to use: `seed` checked, or a fresh random one (returned in the result, for replay)."""
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ModelInputError("seed", f"must be an integer in [0, 2**63), got {seed!r}")
    return seed


@dataclass(frozen=True)
class TextToImageTask:
    """Text to image (docs/model.md §3.3, §5): an image of exactly `width` x `height` pixels. The backbone fills a
    (height / 32) x (width / 32) grid (sides / (16·resolution_multiplier)); `mode="thinking"` first writes a
    text plan, then the image. Defaults: the README's (steps 8, cfg_scale 2.0, block 32, 1024²; turbo, 8 steps;
    thinking_steps 32, thinking_gen_length 4096)."""

    prompt: str
    width: int = 1024
    height: int = 1024
    steps: int = 8
    cfg_scale: float = 2.0
    block_length: int = 32
    mode: str = "normal"
    thinking_steps: int = 32
    thinking_gen_length: int = 4096
    threshold: float = DEFAULT_THRESHOLD
    decoder: str = "turbo"
    decoder_steps: int | None = None  # None: the decoder's own default
    resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER
    seed: int | None = None  # None: drawn by checked()
    sprint: Sprint = None
    temperature: float = DEFAULT_TEMPERATURE
    cfg_rescale: float = 0.0

    @property
    def grid_h(self) -> int:
        return self.height // (PATCH * self.resolution_multiplier)

    @property
    def grid_w(self) -> int:
        return self.width // (PATCH * self.resolution_multiplier)

    def checked(self) -> "TextToImageTask":
        """Every argument checked before any work; the seed drawn, the decoder steps and SPRINT resolved."""
        inputs.check_text("prompt", self.prompt)
        cell = inputs.check_resolution_multiplier(self.resolution_multiplier) * PATCH
        inputs.check_side("height", self.height, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX)
        inputs.check_side("width", self.width, cell, IMAGE_SIDE_MIN, IMAGE_SIDE_MAX)
        decoder_steps = inputs.check_decoder(self.decoder, self.decoder_steps)
        check_positive("steps", self.steps)
        check_positive("block_length", self.block_length)
        if self.mode not in MODES:
            raise ModelInputError("mode", f"must be one of {MODES}, got {self.mode!r}")
        if self.mode == "thinking":
            check_positive("thinking_steps", self.thinking_steps)
            check_positive("thinking_gen_length", self.thinking_gen_length)
        return replace(self, decoder_steps=decoder_steps, seed=resolve_seed(self.seed),
                       sprint=sprint_options(self.sprint))


@dataclass(frozen=True)
class UnderstandTask:
    """Answer `question` about an image (docs/model.md §3.4): smart-resized (sides multiples of 32, 128²..800²
    pixels), tokenised at 16 px per token. Defaults: steps 32, gen_length 2048, block 32, threshold 0.95
    (`GH:scripts/mmu_understand.py`)."""

    question: str
    steps: int = 32
    gen_length: int = 2048
    block_length: int = 32
    threshold: float = DEFAULT_THRESHOLD
    seed: int | None = None  # greedy decoding by default: the seed only matters with temperature > 0
    sprint: Sprint = None
    temperature: float = DEFAULT_TEMPERATURE
    eos_early_stop: bool = False

    def checked(self) -> "UnderstandTask":
        inputs.check_text("question", self.question)
        check_positive("gen_length", self.gen_length)
        check_positive("steps", self.steps)
        check_positive("block_length", self.block_length)
        return replace(self, sprint=sprint_options(self.sprint))


@dataclass(frozen=True)
class EditTask:
    """Edit an image by `instruction` (docs/model.md §3.5). The source is cropped to the closest of the reference's
    crop sizes (<= (crop_base/32)² cells of 32 px, aspect <= 4; `crop` = "cover" resizes to cover it first,
    "reference" crops the un-resized image as the official code does), tokenised at 16 px per token, edited on
    the same grid and decoded: the result is crop size x resolution_multiplier — with the defaults a 512² crop
    gives 1024², as the reference. CFG: 2-way against the no-text branch, plus the no-image branch only when
    cfg_image_scale > 0 (3-way; SPRINT then falls back to the baseline loop, §3.2). Defaults: steps 8,
    cfg_text_scale 4.0, cfg_image_scale 0.0 (README)."""

    instruction: str
    steps: int = 8
    block_length: int = 32
    cfg_text_scale: float = 4.0
    cfg_image_scale: float = 0.0
    threshold: float = DEFAULT_THRESHOLD
    decoder: str = "turbo"
    decoder_steps: int | None = None
    resolution_multiplier: int = DEFAULT_RESOLUTION_MULTIPLIER
    crop: image_prep.EditCrop | str = image_prep.EditCrop.COVER
    crop_base: int = inputs.EDIT_CROP_BASE
    seed: int | None = None
    sprint: Sprint = None
    temperature: float = DEFAULT_TEMPERATURE
    cfg_rescale: float = 0.0

    def checked(self) -> "EditTask":
        inputs.check_text("instruction", self.instruction)
        inputs.check_resolution_multiplier(self.resolution_multiplier)
        decoder_steps = inputs.check_decoder(self.decoder, self.decoder_steps)
        check_positive("steps", self.steps)
        check_positive("block_length", self.block_length)
        if self.cfg_image_scale < 0:
            raise ModelInputError("cfg_image_scale", f"must be >= 0, got {self.cfg_image_scale}")
        return replace(self, decoder_steps=decoder_steps, seed=resolve_seed(self.seed),
                       sprint=sprint_options(self.sprint))


class KeywordTasks:
    """The tasks with their fields as keywords (`generate_image(prompt, width=…)`), for a class that runs typed
    tasks (`text_to_image`, `understand`, `edit`): the Pipeline and the Ray engine offer the same API."""

    def generate_image(self, prompt: str, *, progress=None, should_cancel=None, **options: Any):
        """Text to image: `TextToImageTask(prompt, **options)` (its fields and defaults) by `text_to_image`."""
        return self.text_to_image(TextToImageTask(prompt, **options), progress=progress, should_cancel=should_cancel)

    def understand_image(self, image, question: str, *, progress=None, should_cancel=None, answer=None,
                         **options: Any):
        """Answer `question` about `image` (a PIL image, encoded bytes or a file path): `UnderstandTask`;
        `answer(text)` sees the answer grow as its blocks settle."""
        return self.understand(image, UnderstandTask(question, **options), progress=progress,
                               should_cancel=should_cancel, answer=answer)

    def edit_image(self, image, instruction: str, *, progress=None, should_cancel=None, **options: Any):
        """Edit `image` by `instruction`: `EditTask(instruction, **options)` by `edit`."""
        return self.edit(image, EditTask(instruction, **options), progress=progress, should_cancel=should_cancel)
