"""The service's rule for input images, in one place: the gateway applies it at submit, from the image's
header, before anything is decoded (services/gateway/images.py). The model library keeps its own aspect
check for notebook users (workers/model/image_prep.py); a test keeps the two equal.

Why these bounds: the model never uses more than about 1024²-equivalent pixels of an input. Understanding
resizes to at most 800² px (docs/model.md §3.4); editing crops to the crop list of `Settings.edit_crop_base`
(the reference's 512: at most 256 cells of 32 px, 512²-equivalent; §3.5). Sixteen times that area (4096²)
still takes a phone's 12 MP photo (4032×3024) as it is, while one decoded input stays under 64 MiB (RGBA);
past it the caller sends — and we would decode — pixels the model throws away.
"""

from __future__ import annotations

from shared.jobs import InvalidArgument

# Pixels of an input image: 4096², 16× the most the model uses (see above).
MAX_IMAGE_PIXELS = 4096 * 4096
# The longest side. The widest image the model uses whole is understanding's at the aspect limit (about
# 11,300 × 32 px after its smart resize, §3.4); 16384 also sits at WebP's own limit (16383).
MAX_IMAGE_SIDE = 16384
# Longest over shortest side: Qwen2.5-VL's smart resize, which understanding follows, refuses more extreme
# images, and so does the model library (workers/model/image_prep.MAX_ASPECT_RATIO, kept equal by a test).
MAX_ASPECT_RATIO = 200
# Pillow format names the gateway opens. The worker reads whatever Pillow opens, but the formats people
# send are these three; every other parser (TIFF, PSD, EPS — which runs Ghostscript —, ...) is attack
# surface for no user. MPO, the multi-picture JPEG of many cameras, opens through the JPEG parser.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
ACCEPTED_FORMATS_TEXT = "PNG, JPEG or WebP"


def check_image_shape(width: int, height: int, *, field: str) -> None:
    """Raises InvalidArgument(field, ...) unless a width×height image is within the service's bounds."""
    if width < 1 or height < 1:
        raise InvalidArgument(field, f"is empty ({width}×{height} pixels)")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise InvalidArgument(field, f"is {width}×{height} pixels; the longest side may be {MAX_IMAGE_SIDE} "
                                     "(the model never uses more: resize it first)")
    if width * height > MAX_IMAGE_PIXELS:
        raise InvalidArgument(field, f"is {width}×{height} = {width * height} pixels; the limit is "
                                     f"{MAX_IMAGE_PIXELS}, far more than the model uses: resize it first")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise InvalidArgument(field, f"is {width}×{height} pixels, an aspect ratio of {ratio:.0f}:1; at most "
                                     f"{MAX_ASPECT_RATIO}:1 is supported")
