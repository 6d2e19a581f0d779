"""What a caller asks of the sampler (`GenerationRequest`, `SprintOptions`) and what it gets back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from workers.model.errors import ModelInputError

# docs/model.md §3.6 lists these confidence strategies for SPRINT's adaptive unmasking.
REMASKING_STRATEGIES = ("low_confidence", "top_k_margin", "neg_entropy")

# SPRINT defaults — docs/model.md §3.6 / §3.3 [UNVERIFIED which the HF code uses]: the official README's examples
# (understanding and text-to-image both pass keep_ratio=0.5, cache_warmup_steps=1); sglang-omni passes 0.7 and 2.
# The README is the model authors' own usage, and the service's defaults (`shared/jobs.py` SprintOptions) are
# the same values, so `sprint=True` here and a SPRINT job through the service run alike.
DEFAULT_KEEP_RATIO = 0.5
DEFAULT_CACHE_WARMUP_STEPS = 1
# §3.6: sglang-omni's 0.5, the only value seen anywhere.
DEFAULT_CONFIDENCE_ALPHA = 0.5


@dataclass(frozen=True)
class SprintOptions:
    """SPRINT (docs/model.md §3.6): prefix KV reuse, optional prefix pruning, adaptive unmasking.

    Defaults are the official README's examples: keep_ratio 0.5, cache_warmup_steps 1 (confidence_alpha 0.5,
    low_confidence as sglang-omni).
    """

    keep_ratio: float = DEFAULT_KEEP_RATIO
    cache_warmup_steps: int = DEFAULT_CACHE_WARMUP_STEPS
    confidence_alpha: float = DEFAULT_CONFIDENCE_ALPHA
    image_keep_ratio: float | None = None  # None: use keep_ratio for image tokens in the prefix
    text_keep_ratio: float | None = None  # None: use keep_ratio for text tokens in the prefix
    remasking: str = "low_confidence"
    # k = ceil(remaining / steps_left) per step (§3.6); False keeps the baseline schedule of §3.1 step 3,
    # which with keep ratios of 1 makes SPRINT exactly the baseline (tested).
    adaptive_unmasking: bool = True

    def validate(self) -> None:
        for name in ("keep_ratio", "image_keep_ratio", "text_keep_ratio"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value <= 1.0:
                raise ModelInputError(f"sprint.{name}", f"must be in (0, 1], got {value}")
        if self.cache_warmup_steps < 0:
            raise ModelInputError("sprint.cache_warmup_steps", f"must be >= 0, got {self.cache_warmup_steps}")
        if not 0.0 <= self.confidence_alpha <= 1.0:
            raise ModelInputError("sprint.confidence_alpha", f"must be in [0, 1], got {self.confidence_alpha}")
        if self.remasking not in REMASKING_STRATEGIES:
            raise ModelInputError("sprint.remasking", f"must be one of {REMASKING_STRATEGIES}, got {self.remasking!r}")

    @property
    def prunes(self) -> bool:
        ratios = (self.keep_ratio, self.image_keep_ratio, self.text_keep_ratio)
        return any(r is not None and r < 1.0 for r in ratios)


@dataclass(frozen=True)
class GenerationRequest:
    """One independent block-diffusion generation (docs/model.md §3.1, §3.2).

    `prompts` holds 1, 2 or 3 branches of prompt ids: (cond,), (cond, uncond) for 2-way CFG with
    `cfg_scale`, or (cond, no_text, no_image) for 3-way editing CFG with `cfg_scale` as the text scale and
    `cfg_image_scale`. Shorter branches are left-padded with `mask_id` to the first branch's length.
    """

    prompts: Sequence[Sequence[int]]
    gen_length: int
    mask_id: int
    eos_id: int
    block_length: int = 32
    steps: int = 32
    threshold: float = 0.95
    temperature: float = 0.0
    top_k: int | None = None  # None or 0: off
    top_p: float | None = None
    minimal_topk: int = 1
    cfg_scale: float = 1.0
    cfg_image_scale: float = 0.0
    # docs/model.md §3.2 / open question 3: whether HF rescales guided logits is UNVERIFIED; off (0.0) by
    # default. When > 0: g' = rho * g * std(c)/std(g) + (1 - rho) * g with the std taken per position over the
    # vocabulary (the newer sglang form).
    cfg_rescale: float = 0.0
    image_only: bool = False  # logits of ids < image_token_offset -> -inf (§3.2)
    image_token_offset: int | None = None
    stop_ids: tuple[int, ...] = ()  # stop like EOS (thinking phase 1 stops at <boi>, §3.3)
    eos_early_stop: bool = False  # §3.1 step 4c
    seed: int | None = None
    sprint: SprintOptions | None = None
    # Without SPRINT, reuse the prefix KV within a block: each block's first step runs the whole window and
    # caches the prefix, the other steps run only the block against it. Exact under block-causal masking
    # (docs/model.md §3.6: prefix reuse is exact if nothing is pruned): the baseline's tokens, fewer token-passes.
    # Off by default here (the reference loop re-runs the window every step); the task builders of
    # `workers.model.generation` turn it on. 3-way CFG runs the plain loop, as it does for SPRINT.
    prefix_cache: bool = False

    def validate(self) -> None:
        if not 1 <= len(self.prompts) <= 3:
            raise ModelInputError("prompts", f"expected 1, 2 or 3 branches, got {len(self.prompts)}")
        if any(len(p) == 0 for p in self.prompts):
            raise ModelInputError("prompts", "every branch needs at least one token")
        if any(len(p) > len(self.prompts[0]) for p in self.prompts[1:]):
            raise ModelInputError("prompts", "companion branches may not be longer than the conditional one")
        for name in ("gen_length", "block_length", "steps", "minimal_topk"):
            if getattr(self, name) < 1:
                raise ModelInputError(name, f"must be >= 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ModelInputError("temperature", f"must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ModelInputError("top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ModelInputError("top_p", f"must be in (0, 1], got {self.top_p}")
        if self.cfg_image_scale < 0:
            raise ModelInputError("cfg_image_scale", f"must be >= 0, got {self.cfg_image_scale}")
        if self.cfg_rescale < 0 or self.cfg_rescale > 1:
            raise ModelInputError("cfg_rescale", f"must be in [0, 1], got {self.cfg_rescale}")
        if self.image_only and self.image_token_offset is None:
            raise ModelInputError("image_token_offset", "required when image_only is set")
        if self.sprint is not None:
            self.sprint.validate()


@dataclass
class GenerationResult:
    """Generated ids only (no prompt), cut after the first stop token, which is included (§3.1 step 5)."""

    ids: list[int]
    finish_reason: str  # "stop" (EOS or a stop id ended it) or "length"
    forward_steps: int = 0  # denoising steps this request took part in
    sprint_used: bool = False
    extra: dict = field(default_factory=dict)
