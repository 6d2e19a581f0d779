"""Input-image preparation before the SigLIP-VQ tokenizer (docs/model.md §3.4, §3.5).

* Understanding: Qwen2.5-VL-style smart resize with factor 32 and the reference's pixel bounds, bicubic
  resize to cover the target, centre crop to it (every side a multiple of 32).
* Editing: the reference's 49 crop sizes (≤ 256 patches of 32 px, aspect ≤ 4), the candidate whose aspect
  best matches the image (`var_center_crop`), then a centre crop to it — after resizing to cover it by
  default; the reference's crop-without-resize is available as `EditCrop.REFERENCE` (open question 13).
"""

from __future__ import annotations

import math
from enum import Enum
from functools import lru_cache

from PIL import Image

from workers.model.image_tokenizer.preprocess import to_rgb

# §3.4: the reference hard-codes patch 16 × merge 2 = 32 for this resize, even though the tokenizer uses
# merge 1 (sglang-omni uses 16 → slightly different sizes). We keep 32, as the reference.
UNDERSTANDING_FACTOR = 32
UNDERSTANDING_MIN_PIXELS = 128 * 128  # §3.4, single image
UNDERSTANDING_MAX_PIXELS = 800 * 800  # §3.4, single image (up to 50×50 = 2500 tokens)
UNDERSTANDING_MULTI_IMAGE_MAX_PIXELS = 448 * 448  # §3.4, each image of a multi-image request
MAX_ASPECT_RATIO = 200  # Qwen2.5-VL's smart resize refuses more extreme images; so do we, with a clear error

# §3.5: generate_crop_size_list((512 // 32) ** 2, 32), aspect ≤ 4 → 49 (w, h) candidates.
EDIT_CROP_PATCHES = (512 // 32) ** 2
EDIT_CROP_PATCH = 32
EDIT_CROP_MAX_ASPECT = 4.0


class EditCrop(str, Enum):
    """How `edit_crop` fits the image to the chosen crop size (docs/model.md §11 open question 13).

    COVER (default): resize (LANCZOS) so the image just covers the crop size, then centre crop — the whole
    image is kept up to the aspect trim, which is what a service user expects.
    REFERENCE: the official code's behaviour — centre crop a window of exactly the crop size from the
    un-resized image (black padding where the image is smaller), so a 1024² input keeps only its central 512².
    """

    COVER = "cover"
    REFERENCE = "reference"


def _check_image(image: Image.Image) -> None:
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height} is empty")
    if max(width, height) / min(width, height) > MAX_ASPECT_RATIO:
        raise ValueError(f"image size {width}x{height}: aspect ratio above {MAX_ASPECT_RATIO} is not supported")


def smart_size(
    height: int,
    width: int,
    *,
    factor: int = UNDERSTANDING_FACTOR,
    min_pixels: int = UNDERSTANDING_MIN_PIXELS,
    max_pixels: int = UNDERSTANDING_MAX_PIXELS,
) -> tuple[int, int]:
    """(height, width): multiples of `factor`, near the input aspect, with min_pixels ≤ h·w ≤ max_pixels."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _centre_window(size: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int, int, int]:
    # [INFERRED] odd margins: the extra pixel goes to the right/bottom (floor division), also when the
    # window is larger than the image (negative margins → PIL pads).
    (width, height), (crop_w, crop_h) = size, crop
    left, top = (width - crop_w) // 2, (height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def resize_cover_crop(image: Image.Image, width: int, height: int, resample: Image.Resampling) -> Image.Image:
    """Resize keeping the aspect so that the image covers width×height, then centre crop to exactly that."""
    if image.size == (width, height):
        return image
    scale = max(width / image.width, height / image.height)
    covered = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    return image.resize(covered, resample=resample).crop(_centre_window(covered, (width, height)))


def understanding_resize(image: Image.Image, *, max_pixels: int = UNDERSTANDING_MAX_PIXELS) -> Image.Image:
    """RGB image whose sides are multiples of 32 with 128² ≤ pixels ≤ max_pixels (§3.4; bicubic, centre crop).

    `max_pixels`: 800² for a single image (default); the reference uses 448² per image for several images.
    """
    _check_image(image)
    image = to_rgb(image)
    height, width = smart_size(image.height, image.width, max_pixels=max_pixels)
    return resize_cover_crop(image, width, height, Image.Resampling.BICUBIC)


@lru_cache(maxsize=None)
def crop_size_list(
    num_patches: int = EDIT_CROP_PATCHES, patch: int = EDIT_CROP_PATCH, max_aspect: float = EDIT_CROP_MAX_ASPECT
) -> tuple[tuple[int, int], ...]:
    """(w, h) candidates: the largest patch rectangles with wp·hp ≤ num_patches and aspect ≤ max_aspect."""
    sizes = []
    wp, hp = num_patches, 1
    while wp > 0:  # walk the frontier of wp·hp ≤ num_patches from wide to tall
        if max(wp, hp) / min(wp, hp) <= max_aspect:
            sizes.append((wp * patch, hp * patch))
        if (hp + 1) * wp <= num_patches:
            hp += 1
        else:
            wp -= 1
    return tuple(sizes)


def choose_crop_size(width: int, height: int, sizes: tuple[tuple[int, int], ...] | None = None) -> tuple[int, int]:
    """`var_center_crop`'s choice: the candidate whose aspect best matches (ties → the larger (w, h))."""
    sizes = crop_size_list() if sizes is None else sizes

    def match(size: tuple[int, int]) -> float:
        rw, rh = size[0] / width, size[1] / height
        return min(rw, rh) / max(rw, rh)

    return max(sizes, key=lambda size: (match(size), size))


def edit_crop(image: Image.Image, *, policy: EditCrop | str = EditCrop.COVER) -> Image.Image:
    """RGB source image for editing, cropped to one of the 49 sizes of §3.5 (see `EditCrop`)."""
    _check_image(image)
    policy = EditCrop(policy)
    image = to_rgb(image)
    width, height = choose_crop_size(image.width, image.height)
    if policy is EditCrop.REFERENCE:
        # PIL pads with black outside the image, as the reference's crop does.
        return image.crop(_centre_window(image.size, (width, height)))
    return resize_cover_crop(image, width, height, Image.Resampling.LANCZOS)
