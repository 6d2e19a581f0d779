"""The thinking mode's plan sentence: what the backbone writes before `<boi>` in phase 1 (docs/model.md §3.3).

TOY_WORLD.md leaves the thinking text to training; this is the one place it is defined. It names every
attribute of the prompt, so a gate can read it back (`read_plan`). Its words go into the tokenizer through
`tokenizer_strings(extra_texts=plan_texts())`.
"""

from __future__ import annotations

from ..world import NUM_COMBINATIONS, Combination, Scene, combination

PLAN = "i will draw a {colour} {shape} at the {row} {column} on a {background} background"


def plan_sentence(scene: Scene | Combination) -> str:
    return PLAN.format(colour=scene.colour, shape=scene.shape, row=scene.row, column=scene.column,
                       background=scene.background)


def plan_texts() -> list[str]:
    """Every plan sentence of the world (for the tokenizer's vocabulary)."""
    return [plan_sentence(combination(i)) for i in range(NUM_COMBINATIONS)]


_BY_TEXT: dict[str, Combination] | None = None


def read_plan(text: str) -> Combination | None:
    """The combination a plan sentence names, or None if the text is not exactly one."""
    global _BY_TEXT
    if _BY_TEXT is None:
        _BY_TEXT = {plan_sentence(combination(i)): combination(i) for i in range(NUM_COMBINATIONS)}
    return _BY_TEXT.get(" ".join(text.split()))
