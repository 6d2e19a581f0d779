"""The world's captions, questions and exact answers (TOY_WORLD.md "Text").

Lower case, single spaces, no final punctuation (the questions keep their own `?`). Every function takes a
`Scene` or a `Combination`: texts depend on the five attributes only.

The caption template is kept literally, article included: `a orange triangle …`, not `an orange …`
(TOY_WORLD.md fixes `a {colour} {shape}`; a checker comparing exact captions must agree on it).
"""

from __future__ import annotations

from .world import Combination, Scene

SHAPE_QUESTION = "what shape is it?"
COLOUR_QUESTION = "what colour is the shape?"
POSITION_QUESTION = "where is the shape?"
BACKGROUND_QUESTION = "what colour is the background?"
DESCRIBE = "describe the picture"
QUESTIONS = (SHAPE_QUESTION, COLOUR_QUESTION, POSITION_QUESTION, BACKGROUND_QUESTION, DESCRIBE)


def caption(scene: Scene | Combination) -> str:
    """The text-to-image prompt, e.g. `a red circle at the top left on a white background`."""
    return (f"a {scene.colour} {scene.shape} at the {scene.row} {scene.column} "
            f"on a {scene.background} background")


def answer(question: str, scene: Scene | Combination) -> str:
    """The exact answer to one of `QUESTIONS`."""
    answers = {
        SHAPE_QUESTION: scene.shape,
        COLOUR_QUESTION: scene.colour,
        POSITION_QUESTION: f"{scene.row} {scene.column}",
        BACKGROUND_QUESTION: scene.background,
        DESCRIBE: caption(scene),
    }
    if question not in answers:
        raise ValueError(f"{question!r} is not one of the world's questions: {', '.join(QUESTIONS)}")
    return answers[question]


def questions_and_answers(scene: Scene | Combination) -> list[tuple[str, str]]:
    """All five (question, answer) pairs, in `QUESTIONS` order."""
    return [(q, answer(q, scene)) for q in QUESTIONS]
