"""The shapes world of `../shared/docs/TOY_WORLD.md`: its one definition in code, and its checker."""

from .checker import ATTRIBUTES, Reading, check, compare, read_scene
from .edits import EDIT_KINDS, Edit, make_edit, random_edit
from .render import render, render_array
from .texts import QUESTIONS, answer, caption, questions_and_answers
from .world import (
    BACKGROUNDS,
    COLOURS,
    COLUMNS,
    HELD_OUT,
    NUM_COMBINATIONS,
    ROWS,
    SHAPES,
    TRAINING,
    Combination,
    Scene,
    combination,
    combination_index,
    sample_scene,
    scene_of,
)

__all__ = [
    "ATTRIBUTES", "Reading", "check", "compare", "read_scene",
    "EDIT_KINDS", "Edit", "make_edit", "random_edit", "QUESTIONS", "answer", "caption", "questions_and_answers",
    "BACKGROUNDS", "COLOURS", "COLUMNS", "HELD_OUT", "NUM_COMBINATIONS", "ROWS", "SHAPES", "TRAINING",
    "Combination", "Scene", "combination", "combination_index", "render", "render_array", "sample_scene", "scene_of",
]
