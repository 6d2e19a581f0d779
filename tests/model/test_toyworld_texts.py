"""The world's captions, questions, answers and edit instructions, word for word (TOY_WORLD.md "Text")."""

from __future__ import annotations

import numpy as np
import pytest

from workers.model.toyworld import (
    EDIT_KINDS, HELD_OUT, NUM_COMBINATIONS, QUESTIONS, TRAINING, Combination, Scene, answer, caption, check,
    combination, make_edit, questions_and_answers, random_edit, render, sample_scene,
)
from workers.model.toyworld.edits import current_value, edit_values


def test_captions_are_the_spec_examples():
    assert caption(Combination("circle", "red", "top", "left", "white")) == \
        "a red circle at the top left on a white background"
    assert caption(Scene("square", "blue", "middle", "center", "gray", size=13, jitter_x=3)) == \
        "a blue square at the middle center on a gray background"


def test_questions_and_their_exact_answers():
    scene = Scene("triangle", "orange", "bottom", "right", "black")
    assert questions_and_answers(scene) == [
        ("what shape is it?", "triangle"),
        ("what colour is the shape?", "orange"),
        ("where is the shape?", "bottom right"),
        ("what colour is the background?", "black"),
        ("describe the picture", "a orange triangle at the bottom right on a black background"),
    ]
    with pytest.raises(ValueError):
        answer("what is it?", scene)


def test_every_text_is_lower_case_single_spaced_without_final_punctuation():
    for index in range(0, NUM_COMBINATIONS, 5):
        scene = combination(index)
        texts = [caption(scene)] + [a for _, a in questions_and_answers(scene)]
        texts += [make_edit(Scene(*scene), "background", "white" if scene.background != "white" else "black")
                  .instruction]
        for text in texts:
            assert text == text.lower() == " ".join(text.split()) and text[-1].isalpha()
    assert all(q == q.lower() for q in QUESTIONS)


def test_the_four_instruction_forms():
    source = Scene("circle", "red", "top", "left", "white", size=14, jitter_x=-3, jitter_y=2)
    assert make_edit(source, "colour", "blue").instruction == "make the circle blue"
    assert make_edit(source, "shape", "square").instruction == "turn the circle into a square"
    assert make_edit(source, "position", ("bottom", "right")).instruction == "move the circle to the bottom right"
    assert make_edit(source, "background", "black").instruction == "make the background black"


def test_an_edit_changes_exactly_the_named_attribute():
    fields = {"colour": ["colour"], "shape": ["shape"], "position": ["row", "column"], "background": ["background"]}
    for index in range(NUM_COMBINATIONS):
        source = Scene(*combination(index), size=15, jitter_x=1, jitter_y=-1)
        for kind in EDIT_KINDS:
            for value in edit_values(kind):
                if value == current_value(source, kind):
                    continue  # the source's own value: no edit
                target = make_edit(source, kind, value).target
                changed = [f for f in ("shape", "colour", "row", "column", "background")
                           if getattr(target, f) != getattr(source, f)]
                assert changed and set(changed) <= set(fields[kind])
                assert (target.size, target.jitter_x, target.jitter_y) == (15, 1, -1)


def test_the_checker_sees_the_edit_in_the_pictures():
    rng = np.random.default_rng(0)
    for _ in range(40):
        edit = random_edit(rng, sample_scene(rng), fresh_jitter=True)
        before, after = check(render(edit.target), edit.source), check(render(edit.target), edit.target)
        assert all(after.values())
        assert [name for name, same in before.items() if not same] == [edit.kind]


def test_an_edit_must_change_something_the_world_has():
    source = Scene("circle", "red", "top", "left", "white")
    for kind, value in [("colour", "red"), ("position", ("top", "left")), ("colour", "pink"), ("size", 15)]:
        with pytest.raises(ValueError):
            make_edit(source, kind, value)


def test_random_edits_are_seeded_and_keep_training_data_off_held_out_combinations():
    source = Scene(*combination(1))
    assert random_edit(4, source) == random_edit(4, source)
    rng = np.random.default_rng(1)
    kinds = set()
    for _ in range(300):
        edit = random_edit(rng, sample_scene(rng), TRAINING)
        assert edit.source.index in TRAINING and edit.target.index in TRAINING
        kinds.add(edit.kind)
    assert kinds == set(EDIT_KINDS)
    fresh = random_edit(2, Scene(*combination(3), size=16), fresh_jitter=True)
    assert fresh.target.size == 16 and (fresh.target.jitter_x, fresh.target.jitter_y) != (0, 0)
    with pytest.raises(ValueError):  # no single edit turns combination 7 into another held-out one
        random_edit(0, Scene(*combination(7)), HELD_OUT)
