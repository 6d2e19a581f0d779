"""Every string a word-level tokenizer for the shapes world needs: the world's words and the runtime's specials.

The contract for the tokenizer built from this (a later slice): user and template text splits into words on
whitespace only (`split_words`), so `it?`, `assistant.` and `text-to-image` are single words and decoding
is joining with single spaces — exact for every answer and caption. Special strings are added tokens: the
tokenizer splits them off before the words (role tags sit right against text: `<role>HUMAN</role>a red …`).

The specials and template words are not copied here: they are read from the runtime's own prompt builders
(`workers.model.prompts`), run against a recording stand-in for `TextTokenizer`, so the vocabulary follows
the prompts if they change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from workers.model import prompts
from workers.model.text_tokenizer import IMAGE_END, IMAGE_START, MASK, RESERVED, UNCONDITION, BOI
from workers.model.tiny_checkpoint import EOS_TOKEN

from .edits import EDIT_KINDS, current_value, edit_values, make_edit
from .texts import QUESTIONS, caption, questions_and_answers
from .world import NUM_COMBINATIONS, Scene, combination

# Grid sides whose `<|reserved_token_N|>` the prompts carry: a 128² scene is 4 × 4 codes when generated
# (32 px per code at resolution_multiplier 2, TOY_WORLD.md "Resolution"), a 256² output 8 × 8, and a 128²
# picture read by the image tokenizer for understanding or editing is 8 × 8 (16 px per code, docs/model.md §2.4).
GRID_SIDES = (4, 8)
# Not used by any prompt, but a word-level tokenizer needs it: a prompt outside the world must still encode
# (and then gets arbitrary output).
UNKNOWN = "<unk>"
# `<|role_end|>` is in the tokenizer files but left out: the Uni prompts do not use it (docs/model.md §2.4).
_SPECIAL_IN_TEMPLATE = re.compile(r"<[^<>\s]+>")


class TokenizerStrings(NamedTuple):
    specials: tuple[str, ...]  # added tokens, in a fixed order: unknown, mask, EOS, then as the prompts use them
    words: tuple[str, ...]  # sorted


def split_words(text: str) -> list[str]:
    """The word-level pre-tokenisation: whitespace only."""
    return text.split()


def world_texts() -> Iterator[str]:
    """Every caption, question, answer and edit instruction of the world (all 486 combinations)."""
    yield from QUESTIONS
    for index in range(NUM_COMBINATIONS):
        scene = Scene(*combination(index))
        yield caption(scene)
        for _, reply in questions_and_answers(scene):
            yield reply
        for kind in EDIT_KINDS:
            for value in edit_values(kind):
                if value != current_value(scene, kind):
                    yield make_edit(scene, kind, value).instruction


class _RecordingTokenizer:
    """Stands in for `TextTokenizer` in the prompt builders: records the specials they ask for by string and
    the template text they encode (user text, encoded with specials_as_text=True, is ours and not kept)."""

    _IDS = {"image_start_id": IMAGE_START, "image_end_id": IMAGE_END, "boi_id": BOI,
            "uncondition_id": UNCONDITION, "mask_id": MASK}
    image_token_offset = 0
    codebook_size = 1

    def __init__(self) -> None:
        self.specials: list[str] = []
        self.templates: list[str] = []

    def _use(self, token: str) -> int:
        if token not in self.specials:
            self.specials.append(token)
        return -1 - self.specials.index(token)

    def __getattr__(self, name: str) -> int:
        if name in self._IDS:
            return self._use(self._IDS[name])
        raise AttributeError(f"{type(self).__name__} does not stand in for TextTokenizer.{name}")

    def reserved_id(self, n: int) -> int:
        return self._use(RESERVED.format(n))

    def token_id(self, token: str) -> int:
        return self._use(token)

    def encode(self, text: str, *, specials_as_text: bool = False) -> list[int]:
        if not specials_as_text:
            self.templates.append(text)
        return []


def prompt_strings(grid_sides: Iterable[int] = GRID_SIDES) -> tuple[list[str], list[str]]:
    """(specials, template texts) of every prompt the runtime builds (t2i normal and thinking,
    understanding, editing with all three CFG branches) at the given grid sides."""
    tok = _RecordingTokenizer()
    for side in grid_sides:
        codes = [0] * (side * side)
        prompts.t2i_prompts(tok, "x", side, side)
        prompts.t2i_prompts(tok, "x", side, side, thinking=True)
        prompts.understand_prompt(tok, codes, side, side, "x")
        prompts.edit_prompts(tok, codes, side, side, "x", with_no_image=True)
    specials = list(tok.specials)
    for text in tok.templates:
        for special in _SPECIAL_IN_TEMPLATE.findall(text):
            if special not in specials:
                specials.append(special)
    return specials, [_SPECIAL_IN_TEMPLATE.sub(" ", text) for text in tok.templates]


def tokenizer_strings(grid_sides: Iterable[int] = GRID_SIDES, extra_texts: Iterable[str] = ()) -> TokenizerStrings:
    """What a word-level tokenizer for the world holds. `extra_texts`: more text to cover (e.g. the thinking
    mode's plan sentences, which TOY_WORLD.md leaves to the training slice)."""
    specials, templates = prompt_strings(grid_sides)
    specials = [UNKNOWN, MASK, EOS_TOKEN] + [s for s in specials if s not in (UNKNOWN, MASK, EOS_TOKEN)]
    words = set()
    for text in (*world_texts(), *templates, *extra_texts):
        words.update(split_words(text))
    return TokenizerStrings(tuple(specials), tuple(sorted(words)))
