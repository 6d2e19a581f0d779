"""The designed image codes of the toy checkpoint (workers/model/toyworld/codes.py)."""

import itertools

import numpy as np
import pytest

from workers.model.toyworld import codes as C
from workers.model.toyworld.world import NUM_COMBINATIONS, SIZE_MAX, SIZE_MIN, JITTER_MAX, Scene, combination

EXTREMES = list(itertools.product((SIZE_MIN, SIZE_MAX), (-JITTER_MAX, JITTER_MAX), (-JITTER_MAX, JITTER_MAX)))


@pytest.mark.parametrize("grid", [C.GENERATION_GRID, C.READING_GRID])
def test_codes_read_back_every_combination_at_the_extremes(grid):
    wrong = []
    for index in range(NUM_COMBINATIONS):
        comb = combination(index)
        for size, jx, jy in EXTREMES:
            got = C.read_codes(C.scene_codes(Scene(*comb, size=size, jitter_x=jx, jitter_y=jy), grid))
            if tuple(got) != tuple(comb):
                wrong.append((comb, size, jx, jy, got))
    assert wrong == []


def test_generation_codes_carry_their_cell_and_reading_codes_do_not():
    scene = Scene("square", "red", "bottom", "right", "gray", size=17, jitter_x=4, jitter_y=4)
    gen = C.scene_codes(scene, C.GENERATION_GRID)
    for (row, column), code in np.ndenumerate(gen):
        m = C.meaning(code)
        assert m.background == "gray" if m.cell is None else m.cell == (row, column)
    assert (gen >= C.GENERATION_BASE).sum() >= 1
    read = C.scene_codes(scene, C.READING_GRID)
    shape_codes = set(read.flat) - {C.background_code("gray")}
    assert shape_codes == {C.reading_code("red", "square")}


def test_a_shape_split_over_four_patches_keeps_a_code():
    # Centre (64, 64) at r 13: the triangle straddles the four central generation patches, none half covered.
    scene = Scene("triangle", "blue", "middle", "center", "white", size=13)
    assert C.coverage(scene, C.GENERATION_GRID).max() < 0.5
    assert (C.scene_codes(scene, C.GENERATION_GRID) >= C.GENERATION_BASE).any()


def test_code_ids_cover_the_codebook_once():
    seen = {C.background_code(b) for b in ("white", "black", "gray")}
    seen |= {C.reading_code(c, s) for c in ("red", "green", "blue", "yellow", "purple", "orange")
             for s in ("circle", "square", "triangle")}
    seen |= {C.generation_code(r, c, colour, s) for r in range(4) for c in range(4)
             for colour in ("red", "green", "blue", "yellow", "purple", "orange") for s in ("circle", "square", "triangle")}
    assert seen == set(range(C.CODEBOOK_SIZE))
    assert all(C.meaning(code) for code in seen)
    with pytest.raises(ValueError, match="outside the codebook"):
        C.meaning(C.CODEBOOK_SIZE)
    with pytest.raises(ValueError, match="outside the 4"):
        C.generation_code(4, 0, "red", "circle")
