"""Image → patch vectors, exactly as `image_tokenizer/preprocessor_config.json` says (docs/model.md §4.1).

Resizing is the caller's job (§3.4 / §3.5, `workers.model.image_prep`); here: RGBA composited on white, rescale
(× 1/255 in fp32) *then* normalise, 16-px patches in raster order, each patch vector ordered (C, T, p, p).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WHITE = (255, 255, 255)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB image; transparency is alpha-composited onto white (§4.1), as transformers' processors do."""
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass(frozen=True)
class ImagePreprocessor:
    patch_size: int = 16
    temporal_patch_size: int = 1
    merge_size: int = 1
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @classmethod
    def from_file(cls, path: str | Path) -> "ImagePreprocessor":
        data = json.loads(Path(path).read_text())
        if data.get("do_resize", False):
            raise ValueError(f"{path}: do_resize=true is not supported; resizing is the caller's job (§4.1)")
        if data.get("merge_size", 1) != 1:
            raise ValueError(f"{path}: merge_size must be 1 (one token per patch, §4.1), got {data['merge_size']}")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("image_mean", "image_std"):
            if key in fields:
                fields[key] = tuple(float(v) for v in fields[key])
        return cls(**fields)

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, tuple[int, int]]:
        """(patches [h·w, C·T·p·p] float32, (h, w)); sides must be multiples of the patch size."""
        if not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
        p = self.patch_size
        width, height = image.size
        if width % p or height % p or width == 0 or height == 0:
            raise ValueError(
                f"image size {width}x{height} (width x height) is not a positive multiple of the {p}-px patch; "
                f"resize or crop it first (workers.model.image_prep)"
            )
        pixels = np.asarray(to_rgb(image), dtype=np.float32)  # [H, W, C]
        if self.do_rescale:
            pixels = pixels * np.float32(self.rescale_factor)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            pixels = (pixels - mean) / std
        h, w = height // p, width // p
        channels = pixels.shape[-1]
        # [H, W, C] → [h, p, w, p, C] → [h, w, C, p, p]: raster order of patches, (C, p, p) inside each.
        patches = pixels.reshape(h, p, w, p, channels).transpose(0, 2, 4, 1, 3)
        # A still image is repeated over the temporal patch (T = 1 in the official config): (C, T, p, p).
        patches = np.repeat(patches[:, :, :, None], self.temporal_patch_size, axis=3)
        flat = np.ascontiguousarray(patches).reshape(h * w, channels * self.temporal_patch_size * p * p)
        return torch.from_numpy(flat), (h, w)
