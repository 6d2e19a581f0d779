"""The checker reads every combination of the world right on ground truth, also blurred and resized."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from workers.model.toyworld import (
    ATTRIBUTES, NUM_COMBINATIONS, Combination, Scene, check, combination, read_scene, render, scene_of,
)

CORNERS = [(-4, -4), (-4, 4), (4, -4), (4, 4)]  # the largest jitters


def _misreadings(scenes, degrade=lambda image: image) -> list[tuple[int, Scene, str]]:
    wrong = []
    for scene in scenes:
        result = check(degrade(render(scene)), scene)
        assert set(result) == set(ATTRIBUTES)
        wrong += [(scene.index, scene, name) for name, right in result.items() if not right]
    return wrong


def _extremes(index: int) -> list[Scene]:
    """One combination at all four extreme jitters, two at r = 13 and two at r = 17 (which two alternates
    with the index, so both sizes meet every corner across the world), plus one seeded random draw."""
    comb = combination(index)
    sizes = (13, 17, 17, 13) if index % 2 else (17, 13, 13, 17)
    scenes = [Scene(*comb, size=r, jitter_x=jx, jitter_y=jy) for r, (jx, jy) in zip(sizes, CORNERS)]
    return scenes + [scene_of(comb, index)]


def _one_extreme(index: int) -> Scene:
    """One combination at one extreme size and jitter, rotating over the combinations."""
    jx, jy = CORNERS[(index // 2) % 4]
    return Scene(*combination(index), size=13 if index % 2 else 17, jitter_x=jx, jitter_y=jy)


def test_checker_is_right_on_every_combination_at_the_extremes():
    scenes = [scene for index in range(NUM_COMBINATIONS) for scene in _extremes(index)]
    assert _misreadings(scenes) == []


@pytest.mark.parametrize("name, degrade", [
    ("gaussian blur, radius 1.5", lambda im: im.filter(ImageFilter.GaussianBlur(1.5))),
    ("256 × 256 (checker resizes back)", lambda im: im.resize((256, 256), Image.Resampling.BICUBIC)),
    ("64 × 64 (checker resizes up)", lambda im: im.resize((64, 64), Image.Resampling.BILINEAR)),
])
def test_checker_is_right_after_blur_and_resizing(name, degrade):
    assert _misreadings([_one_extreme(index) for index in range(NUM_COMBINATIONS)], degrade) == [], name


def test_checker_reads_arrays_and_other_modes_alike():
    scene = Scene("triangle", "yellow", "bottom", "center", "black", size=13, jitter_x=4, jitter_y=4)
    expected = ("triangle", "yellow", "bottom", "center", "black")
    assert read_scene(render(scene)) == expected
    assert read_scene(np.asarray(render(scene))) == expected
    assert read_scene(render(scene).convert("RGBA")) == expected
    assert read_scene(render(scene).resize((200, 200))).position == "bottom center"


def test_checker_sees_a_wrong_picture_as_wrong():
    asked = Combination("circle", "red", "top", "left", "white")
    drawn = Scene("square", "blue", "bottom", "left", "gray")
    assert check(render(drawn), asked) == {"shape": False, "colour": False, "position": False, "background": False}
    assert check(render(drawn), drawn) == dict.fromkeys(ATTRIBUTES, True)


def test_a_picture_without_a_shape_reads_as_background_only():
    blank = Image.new("RGB", (128, 128), (250, 250, 250))
    reading = read_scene(blank)
    assert reading.background == "white" and reading.shape is reading.colour is reading.position is None
    assert check(blank, Combination("circle", "red", "top", "left", "white")) == {
        "shape": False, "colour": False, "position": False, "background": True}


def test_checker_refuses_what_is_not_an_rgb_picture():
    with pytest.raises(ValueError):
        read_scene(np.zeros((128, 128, 3), dtype=np.float32))
    with pytest.raises(TypeError):
        read_scene("picture.png")
