"""LLaDA2.0-Uni model runtime: a pure-PyTorch library (no Celery, Ray, gRPC or databases).

Public API (see workers/model/README.md):

* `Pipeline` — `Pipeline.from_pretrained(path).generate_image(...)`, `.understand_image(...)`, `.edit_image(...)`
* `load_backbone(path, *, device="cpu", dtype=None)` — the MoE diffusion backbone
* `load_image_tokenizer(path, *, device="cpu", dtype=torch.float32)` — SigLIP-VQ: `encode(image) -> (codes, h, w)`
* `load_decoder(path, *, mode="normal"|"turbo", device="cpu", dtype=torch.float32)` — codes → PIL image
* `block_diffusion_generate(model, prompt_ids, *, gen_length, block_length, steps, threshold, mask_id, eos_id)`
  — the baseline text loop (docs/model.md §3.1)
* `make_tiny_checkpoint(folder, seed=0)` — a tiny random checkpoint in the official layout, for tests

Names are imported on first use, so `import workers.model.errors` (or the `llada` command's help) does not
pay for torch, diffusers and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> (module, attribute)
_EXPORTS = {
    "Pipeline": ("workers.model.pipeline", "Pipeline"),
    "ImageResult": ("workers.model.pipeline", "ImageResult"),
    "TextResult": ("workers.model.pipeline", "TextResult"),
    "load_backbone": ("workers.model.backbone", "load_backbone"),
    "load_image_tokenizer": ("workers.model.image_tokenizer", "load_image_tokenizer"),
    "load_decoder": ("workers.model.decoder", "load_decoder"),
    "block_diffusion_generate": ("workers.model.sampler.block_diffusion", "block_diffusion_generate"),
    "make_tiny_checkpoint": ("workers.model.tiny_checkpoint", "make_tiny_checkpoint"),
    "Cancelled": ("workers.model.errors", "Cancelled"),
    "ModelInputError": ("workers.model.errors", "ModelInputError"),
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from workers.model.backbone import load_backbone
    from workers.model.decoder import load_decoder
    from workers.model.errors import Cancelled, ModelInputError
    from workers.model.image_tokenizer import load_image_tokenizer
    from workers.model.pipeline import ImageResult, Pipeline, TextResult
    from workers.model.sampler.block_diffusion import block_diffusion_generate
    from workers.model.tiny_checkpoint import make_tiny_checkpoint


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
