"""Input-image checks done before a job is accepted: size limit, full decode, pixel-count bound."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.jobs import InvalidArgument

# A decoded image above this many pixels is refused (decompression-bomb guard, and far beyond what
# the model uses: understanding resizes to ≤ 800² px, editing crops to ≤ 512²-equivalent; MODEL_SPEC §3.4–3.5).
MAX_INPUT_PIXELS = 64 * 1024 * 1024


@dataclass(frozen=True)
class CheckedImage:
    data: bytes          # the bytes as sent: the worker decodes the original, not a re-encoding
    content_type: str
    extension: str
    width: int
    height: int


def check_image(data: bytes, *, field: str, max_bytes: int) -> CheckedImage:
    """Raises InvalidArgument(field, ...) unless ``data`` is a decodable image within the limits."""
    if not data:
        raise InvalidArgument(field, "is required (the encoded bytes of an image)")
    if len(data) > max_bytes:
        raise InvalidArgument(field, f"is {len(data)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_INPUT_PIXELS:
                    raise InvalidArgument(field, f"has {width}×{height} pixels; the limit is {MAX_INPUT_PIXELS}")
                fmt = image.format or ""
                # A full decode: a truncated or corrupt body passes the header check but fails here.
                image.load()
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArgument(field, "has too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidArgument(field, f"could not be decoded as an image ({type(err).__name__})") from None
    content_type = Image.MIME.get(fmt, "application/octet-stream")
    extension = {"JPEG": "jpg"}.get(fmt, fmt.lower() or "bin")
    return CheckedImage(data, content_type, extension, width, height)
