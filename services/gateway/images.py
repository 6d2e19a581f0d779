"""Input images at submit: sized from the header before anything is decoded, then decoded in full, a
bounded number at a time.

Decoding is what costs: an 8192² PNG of 200 KB takes ~260 MB and half a CPU-second to decode, so a few
concurrent submits of such files would take a gateway pod down. `read_image_header` therefore refuses,
from the header alone (Pillow's open is lazy: size and format come without decoding), whatever
shared.images' rule refuses; `ImageDecoder` then decodes what passed — a truncated or corrupt body is
refused at the door, not by the worker — under a semaphore, so N submits never decode N images at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from services.gateway.threads import run_to_end
from shared.images import ACCEPTED_FORMATS, ACCEPTED_FORMATS_TEXT, MAX_IMAGE_PIXELS, check_image_shape
from shared.jobs import InvalidArgument

# PNG text chunks (tEXt, zTXt, iTXt) are inflated while the header is read, up to Pillow's 64 MiB in all: a
# 200 KB file cost that much before its size was known. The gateway keeps no metadata; 4 MiB in all still
# takes real files' XMP and comments (an ICC profile is not counted here; Pillow caps it at 1 MiB).
PngImagePlugin.MAX_TEXT_MEMORY = 4 * 1024 * 1024


@dataclass(frozen=True)
class CheckedImage:
    data: bytes          # the bytes as sent: the worker decodes the original, not a re-encoding
    content_type: str
    extension: str


@contextlib.contextmanager
def _opening(data: bytes, field: str):
    """Image.open restricted to the accepted formats, its failures turned into InvalidArgument(field)."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard sits far above our limit; should it fire first, it refuses too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                yield image
    except InvalidArgument:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArgument(field, f"has too many pixels; the limit is {MAX_IMAGE_PIXELS}") from None
    except UnidentifiedImageError:
        raise InvalidArgument(field, f"could not be read as a {ACCEPTED_FORMATS_TEXT} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated, corrupt, too much metadata
        raise InvalidArgument(field, f"could not be decoded as an image: {err}") from None


def read_image_header(data: bytes, *, field: str, max_bytes: int) -> CheckedImage:
    """Format, size and shape from the header, without decoding; InvalidArgument(field, ...) unless they
    are within the limits. Cheap whatever the image's size."""
    if not data:
        raise InvalidArgument(field, "is required (the encoded bytes of an image)")
    if len(data) > max_bytes:
        raise InvalidArgument(field, f"is {len(data)} bytes; the limit is {max_bytes}")
    with _opening(data, field) as image:
        width, height = image.size
        fmt = image.format  # one of ACCEPTED_FORMATS: _opening opens no other
    check_image_shape(width, height, field=field)
    return CheckedImage(data, Image.MIME[fmt], "jpg" if fmt == "JPEG" else fmt.lower())


def decode_image(image: CheckedImage, *, field: str) -> None:
    """A full decode of an image whose header passed: a truncated or corrupt body fails here."""
    with _opening(image.data, field) as opened:
        opened.load()


class ImageDecoder:
    """Decodes checked images at most ``max_concurrent`` at a time (Settings.max_concurrent_image_decodes):
    a decode of an image at the pixel limit takes up to ~64 MiB, so the gateway's peak stays bounded."""

    def __init__(self, max_concurrent: int):
        self._slots = asyncio.Semaphore(max_concurrent)
        self.waiting = 0   # checks waiting for a slot
        self.decoding = 0  # checks holding one

    async def check(self, image: CheckedImage, *, field: str) -> None:
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.decoding += 1
        try:
            await run_to_end(decode_image, image, field=field)
        finally:
            self.decoding -= 1
            self._slots.release()
