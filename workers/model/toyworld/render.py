"""Draw a scene: one filled shape on a flat 128 × 128 background, no anti-aliasing (TOY_WORLD.md "Scenes").

A pixel is painted when its centre lies inside the shape (boundary included). Pixel (row i, column j)
covers [j, j + 1) × [i, i + 1) in the image coordinates of `Scene.centre`, so its centre is (j + ½, i + ½);
the cell centres (2k + 1) · 128 / 6 are then exactly the middles of the three 128/3-px cells.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .world import BACKGROUNDS, COLOURS, IMAGE_SIDE, Scene

_PIXEL_CENTRES = np.arange(IMAGE_SIDE) + 0.5


def shape_mask(scene: Scene) -> np.ndarray:
    """Bool [128, 128] (rows, columns): the pixels the shape covers."""
    cx, cy = scene.centre
    r = scene.size
    dx = _PIXEL_CENTRES[None, :] - cx
    dy = _PIXEL_CENTRES[:, None] - cy
    if scene.shape == "circle":
        return dx * dx + dy * dy <= r * r
    if scene.shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    # Triangle pointing up: apex (cx, cy − r), base (cx ± r, cy + r); its half width grows from 0 at the
    # apex to r at the base, i.e. (dy + r) / 2.
    return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)


def render_array(scene: Scene) -> np.ndarray:
    """uint8 [128, 128, 3] RGB."""
    pixels = np.empty((IMAGE_SIDE, IMAGE_SIDE, 3), dtype=np.uint8)
    pixels[:] = BACKGROUNDS[scene.background]
    pixels[shape_mask(scene)] = COLOURS[scene.colour]
    return pixels


def render(scene: Scene) -> Image.Image:
    """The scene as a 128 × 128 RGB PIL image."""
    return Image.fromarray(render_array(scene))
