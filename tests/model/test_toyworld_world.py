"""The shapes world's definition: combination index, held-out split, sampler and renderer (TOY_WORLD.md)."""

from __future__ import annotations

import numpy as np
import pytest

from workers.model.toyworld import (
    BACKGROUNDS, COLOURS, HELD_OUT, NUM_COMBINATIONS, TRAINING, Combination, Scene, combination, combination_index,
    render, render_array, sample_scene,
)


def test_index_round_trips_for_every_combination():
    seen = set()
    for index in range(NUM_COMBINATIONS):
        comb = combination(index)
        assert comb.index == index == combination_index(*comb)
        seen.add(comb)
    assert NUM_COMBINATIONS == 486 and len(seen) == 486


def test_index_follows_the_formula_and_list_order():
    assert combination(0) == ("circle", "red", "top", "left", "white")
    assert combination(485) == ("triangle", "orange", "bottom", "right", "gray")
    # blue = colour 2, square = shape 1, middle center = row 1 column 1, gray = background 2
    assert combination_index("square", "blue", "middle", "center", "gray") == ((1 * 6 + 2) * 9 + 1 * 3 + 1) * 3 + 2
    assert combination_index("circle", "red", "top", "left", "black") == 1  # background varies fastest


def test_exactly_seventy_held_out_combinations():
    assert len(HELD_OUT) == 70 and all(i % 7 == 0 for i in HELD_OUT)
    assert len(TRAINING) == 416 and all(i % 7 for i in TRAINING)
    assert sorted(HELD_OUT + TRAINING) == list(range(486))
    assert combination(0).held_out and not combination(1).held_out


@pytest.mark.parametrize("bad", [
    lambda: combination(486), lambda: combination(-1), lambda: combination(True),
    lambda: combination_index("hexagon", "red", "top", "left", "white"),
    lambda: combination_index("circle", "grey", "top", "left", "white"),  # the world spells it gray
    lambda: Scene("circle", "red", "top", "left", "white", size=12.9),
    lambda: Scene("circle", "red", "top", "left", "white", jitter_x=4.01),
])
def test_outside_the_world_is_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_sampler_is_seeded_and_stays_in_its_split():
    first = [sample_scene(np.random.default_rng(3)) for _ in range(2)]
    assert first[0] == first[1]
    rng = np.random.default_rng(7)
    train = [sample_scene(rng) for _ in range(300)]
    assert all(s.index in TRAINING for s in train)
    assert all(13 <= s.size <= 17 and abs(s.jitter_x) <= 4 and abs(s.jitter_y) <= 4 for s in train)
    assert len({s.index for s in train}) > 150  # spread over the split, not stuck on a few combinations
    held = [sample_scene(rng, HELD_OUT) for _ in range(100)]
    assert all(s.index in HELD_OUT for s in held)
    assert sample_scene(5) == sample_scene(5) != sample_scene(6)


def test_cell_centres_and_jitter():
    assert Scene("circle", "red", "middle", "center", "white").centre == (64.0, 64.0)
    x, y = Scene("circle", "red", "top", "right", "white", jitter_x=4, jitter_y=-4).centre
    assert x == pytest.approx(5 * 128 / 6 + 4) and y == pytest.approx(128 / 6 - 4)


def _foreground(scene: Scene) -> np.ndarray:
    return (render_array(scene) != BACKGROUNDS[scene.background]).any(axis=-1)


def test_render_is_one_flat_shape_on_a_flat_background():
    scene = Scene("triangle", "purple", "bottom", "left", "gray", size=16.5, jitter_x=-2.5, jitter_y=3)
    image = render(scene)
    assert image.size == (128, 128) and image.mode == "RGB"
    colours = {tuple(c) for c in np.asarray(image).reshape(-1, 3)}
    assert colours == {COLOURS["purple"], BACKGROUNDS["gray"]}  # no anti-aliasing


def test_square_circle_and_triangle_geometry():
    square = _foreground(Scene("square", "red", "middle", "center", "white", size=15))
    rows, cols = np.nonzero(square)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (49, 78, 49, 78) and square.sum() == 30 * 30
    circle = _foreground(Scene("circle", "red", "middle", "center", "white", size=15))
    assert abs(circle.sum() - np.pi * 15**2) < 15 and circle[64, 49] and not circle[49, 49]  # corner cut off
    triangle = _foreground(Scene("triangle", "red", "middle", "center", "white", size=15))
    rows, cols = np.nonzero(triangle)
    assert (rows.min(), rows.max()) == (50, 78)  # apex at cy − r = 49 (its tip covers no pixel centre), base cy + r
    widths = triangle.sum(axis=1)[rows.min():rows.max() + 1]
    assert widths[0] <= 2 and widths[-1] == 30 and np.all(np.diff(widths) >= 0)  # points up
    assert abs(triangle.sum() - 2 * 15**2) < 20


def test_the_largest_shape_at_the_largest_jitter_is_never_clipped():
    for comb in (Combination("square", "red", "top", "left", "black"),
                 Combination("square", "red", "bottom", "right", "black")):
        for j in (-4, 4):
            fg = _foreground(Scene(*comb, size=17, jitter_x=j, jitter_y=j))
            assert fg.sum() == 34 * 34  # the whole 2r × 2r square, none of it cut off by the image edge
