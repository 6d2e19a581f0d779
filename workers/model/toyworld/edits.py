"""Edit instructions and their results (TOY_WORLD.md "Text", edit instructions).

An edit changes exactly one of the four scored attributes; the result is the same scene otherwise.
Choices where TOY_WORLD.md leaves room ("a fresh jitter allowed"):
* the size r is always kept (it is not an attribute, and keeping it changes the least);
* the jitter is kept unless an `rng` is given, then drawn afresh (a move keeps the shape's offset from its
  cell centre, so the shape lands at the same spot of the new cell);
* the new value must differ from the old one: `make the circle red` on a red circle is no edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import NamedTuple

import numpy as np

from .world import BACKGROUND_NAMES, COLOUR_NAMES, COLUMNS, JITTER_MAX, ROWS, SHAPES, Scene, as_rng

EDIT_KINDS = ("colour", "shape", "position", "background")  # TOY_WORLD.md's order of the four forms

Value = str | tuple[str, str]  # a name; for "position" a (row, column) pair


class Edit(NamedTuple):
    kind: str
    instruction: str
    source: Scene
    target: Scene


def edit_values(kind: str) -> list[Value]:
    """Every value an edit of `kind` can name."""
    if kind == "colour":
        return list(COLOUR_NAMES)
    if kind == "shape":
        return list(SHAPES)
    if kind == "position":
        return [(row, column) for row in ROWS for column in COLUMNS]
    if kind == "background":
        return list(BACKGROUND_NAMES)
    raise ValueError(f"unknown edit kind {kind!r}; the world has {', '.join(EDIT_KINDS)}")


def current_value(scene: Scene, kind: str) -> Value:
    if kind == "position":
        return (scene.row, scene.column)
    edit_values(kind)  # checks the kind
    return getattr(scene, kind)


def instruction(kind: str, source: Scene, value: Value) -> str:
    """`make the {shape} {colour}` · `turn the {shape} into a {new shape}` · `move the {shape} to the {row}
    {column}` · `make the background {background}`; {shape} is the source's shape."""
    if kind == "colour":
        return f"make the {source.shape} {value}"
    if kind == "shape":
        return f"turn the {source.shape} into a {value}"
    if kind == "position":
        row, column = value
        return f"move the {source.shape} to the {row} {column}"
    if kind == "background":
        return f"make the background {value}"
    raise ValueError(f"unknown edit kind {kind!r}; the world has {', '.join(EDIT_KINDS)}")


def make_edit(source: Scene, kind: str, value: Value, *, rng: np.random.Generator | int | None = None) -> Edit:
    """The instruction and the edited scene; a fresh jitter when `rng` is given, else the source's."""
    if isinstance(value, list):
        value = tuple(value)
    if value not in edit_values(kind):
        raise ValueError(f"{value!r} is not a {kind} of the world")
    if value == current_value(source, kind):
        raise ValueError(f"the source's {kind} is already {value!r}; an edit must change it")
    changes = {"row": value[0], "column": value[1]} if kind == "position" else {kind: value}
    if rng is not None:
        rng = as_rng(rng)
        changes["jitter_x"], changes["jitter_y"] = (float(v) for v in rng.uniform(-JITTER_MAX, JITTER_MAX, 2))
    target = dataclasses.replace(source, **changes)
    return Edit(kind, instruction(kind, source, value), source, target)


def random_edit(rng: np.random.Generator | int, source: Scene, indices: Collection[int] | None = None,
                *, fresh_jitter: bool = False) -> Edit:
    """A seeded edit of `source`: a kind uniformly among those with a possible value, then a value uniformly.

    With `indices` (e.g. `world.TRAINING`), only edits whose result's combination is among them are drawn,
    so training data never shows a held-out combination as a target."""
    rng = as_rng(rng)
    allowed = None if indices is None else set(indices)
    options = {}
    for kind in EDIT_KINDS:
        values = [v for v in edit_values(kind) if v != current_value(source, kind)]
        if allowed is not None:
            values = [v for v in values if make_edit(source, kind, v).target.index in allowed]
        if values:
            options[kind] = values
    if not options:
        raise ValueError(f"no edit of {source} leads to a combination among the given indices")
    kind = list(options)[int(rng.integers(len(options)))]
    value = options[kind][int(rng.integers(len(options[kind])))]
    return make_edit(source, kind, value, rng=rng if fresh_jitter else None)
