"""Scenes as training data: seeded pools of rendered scenes and the two tokenizer views of a picture."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from workers.model.toyworld import HELD_OUT, TRAINING, render_array, scene_of
from workers.model.toyworld.codes import GENERATION_SIDE
from workers.model.toyworld.world import Scene, as_rng


def scene_pool(rng: np.random.Generator | int, count: int, indices: Sequence[int] = TRAINING) -> list[Scene]:
    """`count` scenes cycling over `indices` (each combination equally often), fresh size and jitter each."""
    rng = as_rng(rng)
    order = np.concatenate([rng.permutation(indices) for _ in range(-(-count // len(indices)))])[:count]
    return [scene_of(int(i), rng) for i in order]


def evaluation_scenes(seed: int, *, held_out: int = 70, training: int = 70) -> list[tuple[str, Scene]]:
    """The gate's scenes: every held-out combination once, and `training` training combinations (seeded)."""
    rng = np.random.default_rng([seed, 777])
    picks = [("held_out", scene_of(i, rng)) for i in HELD_OUT[:held_out]]
    chosen = rng.choice(TRAINING, size=training, replace=False)
    return picks + [("training", scene_of(int(i), rng)) for i in chosen]


def generation_view(image: Image.Image) -> Image.Image:
    """The scene as the tokenizer sees it for generation and edit sources: 64 × 64, LANCZOS (image_prep)."""
    return image.resize((GENERATION_SIDE, GENERATION_SIDE), Image.Resampling.LANCZOS)


def degrade(image: Image.Image, rng: np.random.Generator, *, p_blur: float = 0.4, max_blur: float = 1.2,
            noise: float = 4.0) -> Image.Image:
    """A light corruption like the decoder's outputs (slightly soft edges, small colour errors)."""
    if rng.random() < p_blur:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, max_blur))))
    if noise > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, rng.uniform(0.0, noise), size=pixels.shape) \
            + rng.normal(0.0, noise, size=(1, 1, 3))
        image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    return image


def render_image(scene: Scene) -> Image.Image:
    return Image.fromarray(render_array(scene))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)
