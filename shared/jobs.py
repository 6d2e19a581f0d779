"""Job kinds, states, stages and the parameters of each kind, with their validation.

Defaults mirror the reference implementation (docs/model.md §3.3–3.6, §5.4, §9) so results are comparable.
`validate_params` fills the defaults in and raises `InvalidArgument` naming the offending field.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator


class JobKind(str, enum.Enum):
    TEXT_TO_IMAGE = "TEXT_TO_IMAGE"
    UNDERSTAND = "UNDERSTAND"
    EDIT = "EDIT"


class JobState(str, enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"


class Stage(str, enum.Enum):
    TOKENIZE = "tokenize"
    # The thinking pass of a thinking-mode text-to-image job (docs/model.md §3.3): a denoise phase of its own
    # (text tokens, before the image's), named apart so users can tell the two phases' progress apart.
    # ARCHITECTURE §2 lists tokenize|denoise|decode; `think` only ever precedes `denoise`.
    THINK = "think"
    DENOISE = "denoise"
    DECODE = "decode"


class InvalidArgument(ValueError):
    """Bad input; `field` names the request field (dotted for nested ones, e.g. `sprint.keep_ratio`)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# Job priority: higher runs earlier. Ten levels because that is what Celery's Redis transport maps.
PRIORITY_MIN = 0
PRIORITY_MAX = 9

# Image sides in pixels. docs/model.md §5.6 only shows 512..1024; [128, 2048] is our choice: 128 is the
# smallest side whose backbone grid (side / 32) is still ≥ 4, 2048 keeps one image ≤ 4096 tokens.
IMAGE_SIDE_MIN = 128
IMAGE_SIDE_MAX = 2048
# Backbone grid cell: 16 px SigVQ patch × resolution_multiplier 2 (docs/model.md §5.4), hence multiples of 32.
IMAGE_SIDE_MULTIPLE = 32

# Upper bounds that keep one request from monopolising a worker; not model limits.
MAX_STEPS = 256
MAX_DECODER_STEPS = 200
MAX_GEN_LENGTH = 8192
BLOCK_LENGTH_MIN = 4
BLOCK_LENGTH_MAX = 256

# docs/model.md §5.4 / §9: turbo is the distilled 8-step sampler, normal the 50-step one.
DEFAULT_DECODER_STEPS = {"turbo": 8, "normal": 50}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SprintOptions(_Params):
    """SPRINT (docs/model.md §3.6). Only its parameter names are public; defaults are choices noted below."""

    enabled: bool = False
    # §3.6: README examples use 0.5, sglang-omni 0.7 — we follow the official README.
    keep_ratio: float = Field(default=0.5, gt=0.0, le=1.0)
    # §3.6: README examples use 1, sglang-omni 2 — README again.
    cache_warmup_steps: int = Field(default=1, ge=0, le=MAX_STEPS)
    # §3.6: sglang-omni default 0.5 (the only value seen).
    confidence_alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    # §3.3 / §11.1: None means "use keep_ratio for this modality" (the HF signature defaults to None).
    image_keep_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    text_keep_ratio: float | None = Field(default=None, gt=0.0, le=1.0)
    # §3.1 baseline default 0.95 (the README's understanding example uses 0.93).
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    remasking: Literal["low_confidence", "top_k_margin", "neg_entropy"] = "low_confidence"


# C0 control characters other than tab, newline and carriage return. A NUL in particular: Postgres cannot
# hold it in text, and one stored in the params column breaks every query that reads the prompt back.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _check_text(value: str, info: ValidationInfo) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    limit = (info.context or {}).get("max_prompt_chars")
    if limit is not None and len(value) > limit:
        raise ValueError(f"is {len(value)} characters long; the limit is {limit}")
    control = _CONTROL_CHARACTERS.search(value)
    if control is not None:
        raise ValueError(f"must not contain control characters (U+{ord(control.group()):04X} at position "
                         f"{control.start()}); only tab, newline and carriage return are allowed")
    return value


def _check_steps_fit_block(steps: int, block_length: int) -> None:
    # §3.1 step 3: each step unmasks ⌊B/S⌋ (+1) tokens of a block; more steps than tokens would be no-ops.
    if steps > block_length:
        raise InvalidArgument("steps", f"must not exceed block_length ({block_length})")


class _DecoderOptions(_Params):
    decoder: Literal["turbo", "normal"] = "turbo"
    # None → DEFAULT_DECODER_STEPS[decoder], filled in by validation.
    decoder_steps: int | None = Field(default=None, ge=1, le=MAX_DECODER_STEPS)
    # docs/model.md §5.4: output pixels = grid × 16 × rmul; default 2. 1..4 accepted, sides must divide.
    resolution_multiplier: int = Field(default=2, ge=1, le=4)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _default_decoder_steps(self):
        if self.decoder_steps is None:
            object.__setattr__(self, "decoder_steps", DEFAULT_DECODER_STEPS[self.decoder])
        return self


class TextToImageParams(_DecoderOptions):
    prompt: str
    width: int = Field(default=1024, ge=IMAGE_SIDE_MIN, le=IMAGE_SIDE_MAX)
    height: int = Field(default=1024, ge=IMAGE_SIDE_MIN, le=IMAGE_SIDE_MAX)
    steps: int = Field(default=8, ge=1, le=MAX_STEPS)
    cfg_scale: float = Field(default=2.0, ge=0.0, le=30.0)
    block_length: int = Field(default=32, ge=BLOCK_LENGTH_MIN, le=BLOCK_LENGTH_MAX)
    mode: Literal["normal", "thinking"] = "normal"
    thinking_steps: int = Field(default=32, ge=1, le=MAX_STEPS)
    thinking_gen_length: int = Field(default=4096, ge=1, le=MAX_GEN_LENGTH)
    sprint: SprintOptions = SprintOptions()

    _prompt = field_validator("prompt")(_check_text)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % IMAGE_SIDE_MULTIPLE:
            raise ValueError(f"must be a multiple of {IMAGE_SIDE_MULTIPLE}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        cell = 16 * self.resolution_multiplier
        for name in ("width", "height"):
            if getattr(self, name) % cell:
                raise InvalidArgument(name, f"must be a multiple of {cell} (16 × resolution_multiplier)")
        _check_steps_fit_block(self.steps, self.block_length)
        return self


class UnderstandParams(_Params):
    question: str
    gen_length: int = Field(default=2048, ge=1, le=MAX_GEN_LENGTH)
    steps: int = Field(default=32, ge=1, le=MAX_STEPS)
    block_length: int = Field(default=32, ge=BLOCK_LENGTH_MIN, le=BLOCK_LENGTH_MAX)
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    sprint: SprintOptions = SprintOptions()

    _question = field_validator("question")(_check_text)

    @model_validator(mode="after")
    def _consistent(self):
        _check_steps_fit_block(self.steps, self.block_length)
        return self


class EditParams(_DecoderOptions):
    instruction: str
    steps: int = Field(default=8, ge=1, le=MAX_STEPS)
    block_length: int = Field(default=32, ge=BLOCK_LENGTH_MIN, le=BLOCK_LENGTH_MAX)
    cfg_text_scale: float = Field(default=4.0, ge=0.0, le=30.0)
    # docs/model.md §3.2: the no-image branch is only built when this is > 0.
    cfg_image_scale: float = Field(default=0.0, ge=0.0, le=30.0)

    _instruction = field_validator("instruction")(_check_text)

    @model_validator(mode="after")
    def _consistent(self):
        _check_steps_fit_block(self.steps, self.block_length)
        return self


PARAMS_BY_KIND: dict[JobKind, type[_Params]] = {
    JobKind.TEXT_TO_IMAGE: TextToImageParams,
    JobKind.UNDERSTAND: UnderstandParams,
    JobKind.EDIT: EditParams,
}

# Object names of a kind's inputs: inputs/<job_id>/<name> in the object store (and the params message's
# fields that carry them on the wire).
INPUT_NAMES: dict[JobKind, tuple[str, ...]] = {
    JobKind.TEXT_TO_IMAGE: (),
    JobKind.UNDERSTAND: ("image",),
    JobKind.EDIT: ("image",),
}
# The public API's params field of each kind (SubmitJobRequest's oneof member): errors name fields under it.
PARAMS_FIELD: dict[JobKind, str] = {
    JobKind.TEXT_TO_IMAGE: "text_to_image",
    JobKind.UNDERSTAND: "understand",
    JobKind.EDIT: "edit",
}


def parse_kind(kind: JobKind | str) -> JobKind:
    try:
        return JobKind(kind)
    except ValueError:
        raise InvalidArgument("kind", f"unknown job kind {kind!r}; expected one of {[k.value for k in JobKind]}") from None


def parse_state(state: JobState | str) -> JobState:
    try:
        return JobState(state)
    except ValueError:
        raise InvalidArgument("state", f"unknown job state {state!r}") from None


def validate_priority(priority: int) -> int:
    if not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidArgument("priority", f"must be an integer in [{PRIORITY_MIN}, {PRIORITY_MAX}]")
    return priority


def validate_params(kind: JobKind | str, params: dict[str, Any], *, max_prompt_chars: int | None = None) -> _Params:
    """The params model of `kind` with defaults filled in; `InvalidArgument` names the first bad field.

    `max_prompt_chars` bounds the prompt / question / instruction; None reads it from the settings.
    """
    model = PARAMS_BY_KIND[parse_kind(kind)]
    if max_prompt_chars is None:
        from shared.settings import get_settings

        max_prompt_chars = get_settings().max_prompt_chars
    if not isinstance(params, dict):
        raise InvalidArgument("params", "must be a mapping")
    try:
        return model.model_validate(params, context={"max_prompt_chars": max_prompt_chars})
    except ValidationError as exc:
        raise _as_invalid_argument(exc) from None


def _as_invalid_argument(exc: ValidationError) -> InvalidArgument:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidArgument):  # raised inside a model validator: keep its field
        return cause
    if error["type"] == "extra_forbidden":
        return InvalidArgument(field, "unknown field")
    if error["type"] == "missing":
        return InvalidArgument(field, "is required")
    # Every error has a field: the model validators raise InvalidArgument (kept above), the rest are per field.
    return InvalidArgument(field, error["msg"].removeprefix("Value error, "))
