"""Read a picture back into the world's attributes: deterministic, model-free (TOY_WORLD.md "the checker").

The rule, step by step, on the picture resized to 128 × 128:
1. background = the background colour nearest to the per-channel median of the 3-px border;
2. foreground = the pixels farther than 60 (Euclidean RGB distance) from that background colour;
3. colour = the palette colour nearest to the foreground's per-channel median;
4. position = the cell holding the foreground's centroid;
5. shape = triangle if the centroid lies more than 0.585 of the way down the foreground's 1–99 percentile
   bounding box, else square if foreground fills more than 0.9 of that box, else circle.

Where TOY_WORLD.md leaves a detail open, the choice (each also in a comment below):
* "farther than 60 from it": from the named background colour (the palette value chosen in step 1), not
  from the measured border median. Both agree on a flat background; this is the literal reading.
* "fills": the fraction of the pixels whose centres lie in the box that are foreground (at most 1).
* Coordinates are pixel centres (column + ½, row + ½), as `render` paints them; percentiles are numpy's
  default (linear interpolation).
* Resizing to 128 × 128 uses PIL's bicubic filter (`Image.resize`'s default for RGB).
* A picture with no foreground pixel reads as its background only: shape, colour and position are None,
  so `compare` counts them wrong.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, CELL, COLOURS, COLUMNS, IMAGE_SIDE, ROWS, Combination, Scene

BORDER_PX = 3
FOREGROUND_DISTANCE = 60.0
BOX_PERCENTILES = (1.0, 99.0)
TRIANGLE_CENTROID_DOWN = 0.585  # a triangle's area centroid sits 2/3 down its height; circle and square 1/2
SQUARE_FILL = 0.9  # a square fills its box; a circle π/4 ≈ 0.79 of it; a triangle about half
RESAMPLE = Image.Resampling.BICUBIC

ATTRIBUTES = ("shape", "colour", "position", "background")  # the four a check scores


class Reading(NamedTuple):
    """What the checker saw. Fields are world names; None where the picture had no foreground."""

    shape: str | None
    colour: str | None
    row: str | None
    column: str | None
    background: str

    @property
    def position(self) -> str | None:
        return None if self.row is None else f"{self.row} {self.column}"


def as_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """uint8 [128, 128, 3] from a PIL image (any mode, any size) or a uint8 [H, W, 3] array."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] RGB array, got {image.dtype} {list(image.shape)}")
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (IMAGE_SIDE, IMAGE_SIDE):
        image = image.resize((IMAGE_SIDE, IMAGE_SIDE), RESAMPLE)
    return np.asarray(image)


def _nearest(rgb: np.ndarray, palette: Mapping[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    distances = np.linalg.norm(np.array([palette[n] for n in names], dtype=np.float64) - rgb, axis=1)
    return names[int(np.argmin(distances))]  # ties: the earlier name in the list


def _border(rgb: np.ndarray) -> np.ndarray:
    keep = np.zeros(rgb.shape[:2], dtype=bool)
    keep[:BORDER_PX] = keep[-BORDER_PX:] = True
    keep[:, :BORDER_PX] = keep[:, -BORDER_PX:] = True
    return rgb[keep]


def _cell(coordinate: float, names: tuple[str, ...]) -> str:
    return names[min(int(coordinate // CELL), len(names) - 1)]


def _shape(foreground: np.ndarray, ys: np.ndarray, xs: np.ndarray, cy: float) -> str:
    x_lo, x_hi = np.percentile(xs, BOX_PERCENTILES)
    y_lo, y_hi = np.percentile(ys, BOX_PERCENTILES)
    # A box of zero height (a one-row foreground) has no "way down": it counts as centred.
    down = (cy - y_lo) / (y_hi - y_lo) if y_hi > y_lo else 0.5
    if down > TRIANGLE_CENTROID_DOWN:
        return "triangle"
    centres = np.arange(IMAGE_SIDE) + 0.5
    in_rows = (centres >= y_lo) & (centres <= y_hi)
    in_columns = (centres >= x_lo) & (centres <= x_hi)
    box = foreground[in_rows][:, in_columns]
    fill = box.mean() if box.size else 0.0
    return "square" if fill > SQUARE_FILL else "circle"


def read_scene(image: Image.Image | np.ndarray) -> Reading:
    """The four attributes of a picture of any size, by TOY_WORLD.md's rule (see the module docstring)."""
    rgb = as_pixels(image).astype(np.int32)
    background = _nearest(np.median(_border(rgb), axis=0), BACKGROUNDS)
    # Distance from the named background colour, not from the measured median (the literal reading);
    # compared squared, in integers (exact, and several times faster than a float norm).
    diff = rgb - np.array(BACKGROUNDS[background], dtype=np.int32)
    foreground = np.einsum("ijc,ijc->ij", diff, diff) > FOREGROUND_DISTANCE ** 2
    if not foreground.any():
        return Reading(None, None, None, None, background)
    colour = _nearest(np.median(rgb[foreground], axis=0), COLOURS)
    ys, xs = np.nonzero(foreground)
    ys, xs = ys + 0.5, xs + 0.5  # pixel centres
    cx, cy = float(xs.mean()), float(ys.mean())
    shape = _shape(foreground, ys, xs, cy)
    return Reading(shape, colour, _cell(cy, ROWS), _cell(cx, COLUMNS), background)


def compare(reading: Reading, expected: Scene | Combination) -> dict[str, bool]:
    """{attribute: read right} for shape, colour, position and background."""
    return {
        "shape": reading.shape == expected.shape,
        "colour": reading.colour == expected.colour,
        "position": (reading.row, reading.column) == (expected.row, expected.column),
        "background": reading.background == expected.background,
    }


def check(image: Image.Image | np.ndarray, expected: Scene | Combination) -> dict[str, bool]:
    """`compare(read_scene(image), expected)`."""
    return compare(read_scene(image), expected)
