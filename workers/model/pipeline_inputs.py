"""Checks and conversions of the Pipeline's user inputs; every refusal is a `ModelInputError` naming the field.

Images arrive as PIL images, encoded bytes or file paths, in any mode PIL opens. They leave as upright
8-bit RGB: EXIF rotation applied, transparency composited on white (docs/model.md §4.1), CMYK / palette / LA
converted, 16-bit scaled down to 8 bits. Refused clearly: bytes that are not an image, truncated files,
empty images, decompression bombs (PIL's `Image.MAX_IMAGE_PIXELS`), extreme aspect ratios, float images.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from workers.model import image_prep
from workers.model.decoder import MODES as DECODER_MODES
from workers.model.errors import ModelInputError
from workers.model.image_tokenizer.preprocess import to_rgb

# docs/model.md §3.5: the reference builds its edit crop list as generate_crop_size_list((512 // 32) ** 2, 32);
# 512 is that base resolution. A smaller base gives smaller crops (fewer tokens), e.g. for quick trials.
EDIT_CROP_BASE = 512
EDIT_CROP_CELL = image_prep.EDIT_CROP_PATCH
# Modes whose samples use 16 bits: PIL's convert("RGB") would clip them at 255 (a white image), so they are
# scaled to 8 bits by hand first. "I" (32-bit int) is how PIL opens most 16-bit PNGs.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
SIXTEEN_BIT_MAX = 65535


def check_text(field_name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ModelInputError(field_name, "must be non-empty text")
    return value


def check_resolution_multiplier(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelInputError("resolution_multiplier", f"must be an integer >= 1, got {value!r}")
    return value


def check_side(field_name: str, value: Any, multiple: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelInputError(field_name, f"must be an integer number of pixels, got {value!r}")
    if not low <= value <= high:
        raise ModelInputError(field_name, f"must be in [{low}, {high}] pixels, got {value}")
    if value % multiple:
        raise ModelInputError(field_name, f"must be a multiple of {multiple} (16 px x resolution_multiplier), "
                                          f"got {value}")
    return value


def check_positions(config, field_name: str, tokens: int) -> int:
    """Prompt plus generated positions must fit the backbone's `max_position_embeddings` (config.json);
    refused up front, naming the user input (`prompt`, `image`) that made the request this long."""
    limit = config.max_position_embeddings
    if tokens > limit:
        raise ModelInputError(field_name, f"the request needs {tokens} positions; the backbone has {limit}")
    return tokens


def check_decoder(mode: Any, steps: Any) -> int:
    """The decoder choice ("turbo" or "normal") and its step count (None = that decoder's default), checked
    without loading a decoder; returns the steps to run."""
    if mode not in DECODER_MODES:
        raise ModelInputError("decoder", f"must be one of {sorted(DECODER_MODES)}, got {mode!r}")
    spec = DECODER_MODES[mode]
    steps = spec.default_steps if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < spec.min_steps:
        raise ModelInputError("decoder_steps", f"the {mode} decoder needs an integer >= {spec.min_steps}, "
                                               f"got {steps!r}")
    return steps


def _decode(data: bytes, field_name: str) -> Image.Image:
    if not data:
        raise ModelInputError(field_name, "is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; we refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ModelInputError(field_name, f"too many pixels (decompression bomb guard): {err}") from None
    except UnidentifiedImageError:
        raise ModelInputError(field_name, "could not be decoded as an image (unknown or unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated or corrupt data
        raise ModelInputError(field_name, f"could not be decoded as an image: {err}") from None
    return image


def _eight_bit(image: Image.Image, field_name: str) -> Image.Image:
    """Scale 16-bit samples to 8 bits (rounding), keeping the picture instead of clipping it to white."""
    array = np.asarray(image, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() > SIXTEEN_BIT_MAX):
        raise ModelInputError(field_name, f"{image.mode} samples outside 0..{SIXTEEN_BIT_MAX} are not supported; "
                                          "save the image as 8- or 16-bit")
    return Image.fromarray(((array * 255 + SIXTEEN_BIT_MAX // 2) // SIXTEEN_BIT_MAX).astype(np.uint8), mode="L")


def to_rgb8(image: Image.Image, field_name: str) -> Image.Image:
    """Upright 8-bit RGB of any PIL image, or a clear refusal."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES:
        image = _eight_bit(image, field_name)
    elif image.mode == "F":
        raise ModelInputError(field_name, "32-bit float images are not supported; save it as 8- or 16-bit")
    try:
        return to_rgb(image)
    except (ValueError, OSError) as err:
        raise ModelInputError(field_name, f"mode {image.mode} cannot be converted to RGB: {err}") from None


def check_image_size(image: Image.Image, field_name: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ModelInputError(field_name, f"is empty ({width}x{height} pixels)")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ModelInputError(field_name, f"{width}x{height} has more than the {limit} pixels allowed "
                                          "(PIL.Image.MAX_IMAGE_PIXELS)")
    ratio = max(width, height) / min(width, height)
    if ratio > image_prep.MAX_ASPECT_RATIO:
        raise ModelInputError(field_name, f"{width}x{height} has an aspect ratio of {ratio:.0f}:1; at most "
                                          f"{image_prep.MAX_ASPECT_RATIO}:1 is supported")


def open_image(image: Image.Image | bytes | bytearray | str | Path, field_name: str) -> Image.Image:
    """A PIL image, encoded bytes or a file path → checked 8-bit RGB."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = _decode(bytes(image), field_name)
    elif isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise ModelInputError(field_name, f"{path}: no such file")
        image = _decode(path.read_bytes(), field_name)
    elif not isinstance(image, Image.Image):
        raise ModelInputError(field_name, f"expected a PIL image, bytes or a path, got {type(image).__name__}")
    check_image_size(image, field_name)
    return to_rgb8(image, field_name)


def edit_source(image: Image.Image, *, crop: image_prep.EditCrop | str, base: int) -> Image.Image:
    """The editing source cropped as `image_prep.edit_crop` does, with the crop list of `base` (§3.5)."""
    try:
        policy = image_prep.EditCrop(crop)
    except ValueError:
        raise ModelInputError("crop", f"must be one of {[p.value for p in image_prep.EditCrop]}, got {crop!r}") from None
    if isinstance(base, bool) or not isinstance(base, int) or base < EDIT_CROP_CELL or base % EDIT_CROP_CELL:
        raise ModelInputError("crop_base", f"must be a positive multiple of {EDIT_CROP_CELL}, got {base!r}")
    if base == EDIT_CROP_BASE:
        return image_prep.edit_crop(image, policy=policy)
    sizes = image_prep.crop_size_list((base // EDIT_CROP_CELL) ** 2)
    width, height = image_prep.choose_crop_size(image.width, image.height, sizes)
    if policy is image_prep.EditCrop.REFERENCE:
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))
    return image_prep.resize_cover_crop(image, width, height, Image.Resampling.LANCZOS)
