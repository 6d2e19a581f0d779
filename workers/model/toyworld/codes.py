"""The image codes of the trained toy checkpoint: what the image tokenizer is taught to emit per patch.

Why codes are designed, not left to a VQ objective: the diffusion decoder (docs/model.md §5.3) places its
semantic tokens on RoPE axis 0 only — token i sits at (1 + i, 0, 0), image patch (r, c) at (Lcap + 1, r, c) —
so an image patch can tell semantic tokens apart only by their *content*. A patch finds "the code above me"
only if that code carries its own cell (TOY_WORLD.md: a prototype whose codes did not carry it painted at
chance). So shape codes here name their cell; background codes need not (a patch that finds no shape code
of its cell paints the background).

Two views of a scene, as the runtime uses them (16 px per code at the tokenizer, docs/model.md §4.1):
* **generation view**, a 4 × 4 grid: the scene seen at 64 × 64 (edit sources are cropped to 64², see
  `GENERATION_SIDE`), and what the backbone generates for a 128 × 128 picture (32 px per code at
  `resolution_multiplier` 2, TOY_WORLD.md "Resolution"). Its shape codes carry (cell, colour, shape): the
  decoder paints them back.
* **reading view**, an 8 × 8 grid: the scene at 128 × 128, as understanding reads it (§3.4 keeps 128² as is).
  Its shape codes carry (colour, shape) only: the backbone knows each code's place from the sequence.

Code ids (no offset; the backbone adds `image_token_offset`):
    0 … 2                background (white, black, gray) — both views
    3 … 20               reading-view shape: 3 + colour · 3 + shape
    21 … 308             generation-view shape: 21 + (cell · 6 + colour) · 3 + shape, cell = row · 4 + column

A patch is a shape patch when the shape covers at least `COVER` of it, or when it holds the largest share of
the shape (so a shape split over four patches still has a code).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .render import shape_mask
from .world import BACKGROUND_NAMES, CELL, COLOUR_NAMES, COLUMNS, IMAGE_SIDE, ROWS, SHAPES, Scene

GENERATION_GRID = 4  # codes per side for a 128² picture generated or decoded (rm 2: 32 px per code)
READING_GRID = 8  # codes per side for a 128² picture read by the tokenizer (16 px per code)
GENERATION_SIDE = GENERATION_GRID * 16  # px the tokenizer sees in the generation view (64 × 64)
COVER = 0.125  # fraction of a patch the shape must cover to make it a shape patch

NUM_BACKGROUND_CODES = len(BACKGROUND_NAMES)
READING_BASE = NUM_BACKGROUND_CODES
GENERATION_BASE = READING_BASE + len(COLOUR_NAMES) * len(SHAPES)
CODEBOOK_SIZE = GENERATION_BASE + GENERATION_GRID ** 2 * len(COLOUR_NAMES) * len(SHAPES)  # 309


class CodeMeaning(NamedTuple):
    """What one code says. `cell` is (row, column) in the generation grid for generation-view shape codes."""

    background: str | None = None
    colour: str | None = None
    shape: str | None = None
    cell: tuple[int, int] | None = None


def background_code(background: str) -> int:
    return BACKGROUND_NAMES.index(background)


def reading_code(colour: str, shape: str) -> int:
    return READING_BASE + COLOUR_NAMES.index(colour) * len(SHAPES) + SHAPES.index(shape)


def generation_code(row: int, column: int, colour: str, shape: str) -> int:
    if not (0 <= row < GENERATION_GRID and 0 <= column < GENERATION_GRID):
        raise ValueError(f"cell ({row}, {column}) is outside the {GENERATION_GRID} × {GENERATION_GRID} grid")
    cell = row * GENERATION_GRID + column
    return GENERATION_BASE + (cell * len(COLOUR_NAMES) + COLOUR_NAMES.index(colour)) * len(SHAPES) + SHAPES.index(shape)


def meaning(code: int) -> CodeMeaning:
    code = int(code)
    if not 0 <= code < CODEBOOK_SIZE:
        raise ValueError(f"code {code} is outside the codebook [0, {CODEBOOK_SIZE})")
    if code < READING_BASE:
        return CodeMeaning(background=BACKGROUND_NAMES[code])
    if code < GENERATION_BASE:
        colour, shape = divmod(code - READING_BASE, len(SHAPES))
        return CodeMeaning(colour=COLOUR_NAMES[colour], shape=SHAPES[shape])
    rest, shape = divmod(code - GENERATION_BASE, len(SHAPES))
    cell, colour = divmod(rest, len(COLOUR_NAMES))
    return CodeMeaning(colour=COLOUR_NAMES[colour], shape=SHAPES[shape], cell=divmod(cell, GENERATION_GRID))


def coverage(scene: Scene, grid: int) -> np.ndarray:
    """float [grid, grid]: the fraction of each patch the shape covers."""
    side = IMAGE_SIDE // grid
    mask = shape_mask(scene).astype(np.float64)
    return mask.reshape(grid, side, grid, side).mean(axis=(1, 3))


def shape_patches(scene: Scene, grid: int) -> np.ndarray:
    """bool [grid, grid]: the patches that get a shape code."""
    cover = coverage(scene, grid)
    chosen = cover >= COVER
    chosen.flat[int(np.argmax(cover))] = True
    return chosen


def scene_codes(scene: Scene, grid: int) -> np.ndarray:
    """int64 [grid, grid]: the codes the tokenizer is taught to give this scene in the view of `grid`."""
    if grid not in (GENERATION_GRID, READING_GRID):
        raise ValueError(f"grid must be {GENERATION_GRID} (generation view) or {READING_GRID} (reading view)")
    codes = np.full((grid, grid), background_code(scene.background), dtype=np.int64)
    for row, column in zip(*np.nonzero(shape_patches(scene, grid))):
        codes[row, column] = (generation_code(row, column, scene.colour, scene.shape) if grid == GENERATION_GRID
                              else reading_code(scene.colour, scene.shape))
    return codes


class CodeReading(NamedTuple):
    """A code grid read back into the world's attributes (None where the grid does not say)."""

    shape: str | None
    colour: str | None
    row: str | None
    column: str | None
    background: str | None


def _most_common(values: list[str]) -> str | None:
    return max(sorted(set(values)), key=values.count) if values else None


def read_codes(codes: np.ndarray) -> CodeReading:
    """The attributes a code grid (either view) describes: majority background, colour and shape over the
    codes; position = the world cell of the shape patches' mean centre. A code-level probe of the backbone."""
    codes = np.asarray(codes)
    grid = codes.shape[0]
    side = IMAGE_SIDE / grid
    backgrounds, colours, shapes, centres = [], [], [], []
    for (row, column), code in np.ndenumerate(codes):
        m = meaning(code)
        if m.background is not None:
            backgrounds.append(m.background)
            continue
        colours.append(m.colour)
        shapes.append(m.shape)
        centres.append(((row + 0.5) * side, (column + 0.5) * side))
    if not centres:
        return CodeReading(None, None, None, None, _most_common(backgrounds))
    y, x = np.mean(centres, axis=0)
    cell = lambda v: min(int(v // CELL), 2)  # noqa: E731 - the 3 × 3 world cell of a coordinate
    return CodeReading(_most_common(shapes), _most_common(colours), ROWS[cell(y)], COLUMNS[cell(x)],
                       _most_common(backgrounds))
