"""The shapes world's attributes, combination index, held-out split and scene sampler (TOY_WORLD.md).

Every list below is in TOY_WORLD.md's order: the combination index is built from 0-based positions in them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 50, 180),
    "orange": (245, 130, 20),
}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
BACKGROUNDS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "gray": (128, 128, 128),
}
COLOUR_NAMES = tuple(COLOURS)
BACKGROUND_NAMES = tuple(BACKGROUNDS)

IMAGE_SIDE = 128  # px, square RGB scenes
CELL = IMAGE_SIDE / 3  # a 3 × 3 grid of cells
SIZE_MIN, SIZE_MAX = 13.0, 17.0  # r: radius, half side, half base and half height
JITTER_MAX = 4.0  # the centre moves up to this many px from the cell centre on each axis

NUM_COMBINATIONS = len(SHAPES) * len(COLOURS) * len(ROWS) * len(COLUMNS) * len(BACKGROUNDS)  # 486
HELD_OUT_EVERY = 7  # combinations whose index is a multiple of 7 are never trained on


class Combination(NamedTuple):
    """The five listed attributes of a scene, by name. Its `index` is TOY_WORLD.md's combination index."""

    shape: str
    colour: str
    row: str
    column: str
    background: str

    @property
    def index(self) -> int:
        return combination_index(self.shape, self.colour, self.row, self.column, self.background)

    @property
    def position(self) -> str:
        """`{row} {column}`, as the answer to `where is the shape?` says it."""
        return f"{self.row} {self.column}"

    @property
    def held_out(self) -> bool:
        return is_held_out(self.index)


def _position_of(name: str, values: tuple[str, ...], what: str) -> int:
    if name not in values:
        raise ValueError(f"unknown {what} {name!r}; the world has {', '.join(values)}")
    return values.index(name)


def combination_index(shape: str, colour: str, row: str, column: str, background: str) -> int:
    """`((shape · 6 + colour) · 9 + row · 3 + column) · 3 + background`, each by its 0-based list position."""
    s = _position_of(shape, SHAPES, "shape")
    c = _position_of(colour, COLOUR_NAMES, "colour")
    r = _position_of(row, ROWS, "row")
    k = _position_of(column, COLUMNS, "column")
    b = _position_of(background, BACKGROUND_NAMES, "background")
    return ((s * len(COLOURS) + c) * 9 + r * 3 + k) * len(BACKGROUNDS) + b


def combination(index: int) -> Combination:
    """The inverse of `combination_index`."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < NUM_COMBINATIONS:
        raise ValueError(f"combination index must be an integer in [0, {NUM_COMBINATIONS}), got {index!r}")
    rest, b = divmod(int(index), len(BACKGROUNDS))
    rest, position = divmod(rest, 9)
    s, c = divmod(rest, len(COLOURS))
    r, k = divmod(position, 3)
    return Combination(SHAPES[s], COLOUR_NAMES[c], ROWS[r], COLUMNS[k], BACKGROUND_NAMES[b])


def is_held_out(index: int) -> bool:
    return index % HELD_OUT_EVERY == 0


HELD_OUT = tuple(i for i in range(NUM_COMBINATIONS) if is_held_out(i))  # 70 indices
TRAINING = tuple(i for i in range(NUM_COMBINATIONS) if not is_held_out(i))  # 416 indices


@dataclass(frozen=True)
class Scene:
    """One picture of the world: a combination plus the shape's size r and its jitter from the cell centre.

    Size and jitter are real numbers: TOY_WORLD.md writes them as intervals, r ∈ [13, 17] and [−4, 4]
    (the cell centres (2k + 1) · 128 / 6 are not whole pixels either)."""

    shape: str
    colour: str
    row: str
    column: str
    background: str
    size: float = 15.0
    jitter_x: float = 0.0
    jitter_y: float = 0.0

    def __post_init__(self) -> None:
        combination_index(self.shape, self.colour, self.row, self.column, self.background)  # names checked
        if not SIZE_MIN <= self.size <= SIZE_MAX:
            raise ValueError(f"size r must lie in [{SIZE_MIN:g}, {SIZE_MAX:g}], got {self.size!r}")
        for name in ("jitter_x", "jitter_y"):
            if not -JITTER_MAX <= getattr(self, name) <= JITTER_MAX:
                raise ValueError(f"{name} must lie in [-{JITTER_MAX:g}, {JITTER_MAX:g}], got {getattr(self, name)!r}")

    @property
    def combination(self) -> Combination:
        return Combination(self.shape, self.colour, self.row, self.column, self.background)

    @property
    def index(self) -> int:
        return self.combination.index

    @property
    def position(self) -> str:
        return self.combination.position

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) in image coordinates: (0, 0) is the top-left corner of the top-left pixel."""
        return (cell_centre(COLUMNS.index(self.column)) + self.jitter_x,
                cell_centre(ROWS.index(self.row)) + self.jitter_y)


def cell_centre(k: int) -> float:
    """(2k + 1) · 128 / 6: the centre of cell k (0, 1, 2) along either axis."""
    return (2 * k + 1) * IMAGE_SIDE / 6


def as_rng(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def scene_of(comb: Combination | int, rng: np.random.Generator | int) -> Scene:
    """A scene of one combination (or index) with a size and jitter drawn uniformly from their ranges."""
    comb = combination(comb) if not isinstance(comb, Combination) else comb
    rng = as_rng(rng)
    size = float(rng.uniform(SIZE_MIN, SIZE_MAX))
    jx, jy = (float(v) for v in rng.uniform(-JITTER_MAX, JITTER_MAX, size=2))
    return Scene(*comb, size=size, jitter_x=jx, jitter_y=jy)


def sample_scene(rng: np.random.Generator | int, indices: Sequence[int] = TRAINING) -> Scene:
    """A seeded draw: a combination uniformly from `indices` (the training set unless told), then its scene."""
    if len(indices) == 0:
        raise ValueError("indices is empty: there is no combination to draw from")
    rng = as_rng(rng)
    return scene_of(combination(int(rng.choice(indices))), rng)
