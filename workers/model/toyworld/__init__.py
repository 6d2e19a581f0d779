"""The shapes world of `../shared/docs/TOY_WORLD.md`: its one definition in code, and its checker.

This package is the ground truth the trained tiny checkpoint (issue 12) is built and judged on. Nothing in
the runtime imports it: the runtime has no branch for the toy model.

| module | what it holds |
|---|---|
| `world` | attribute lists in TOY_WORLD.md's order with their RGB values, `Combination` and the combination index (`combination_index`, `combination`), `HELD_OUT` (index % 7 == 0, 70) and `TRAINING` (416), `Scene` (a combination + size r and jitter), seeded `sample_scene` / `scene_of` |
| `render` | `render(scene)` → 128 × 128 RGB PIL image (pixel painted iff its centre is inside the shape), `render_array`, `shape_mask` |
| `texts` | `caption`, `QUESTIONS`, `answer`, `questions_and_answers` — the exact strings |
| `edits` | `EDIT_KINDS`, `make_edit(source, kind, value)` → `Edit(kind, instruction, source, target)`, seeded `random_edit` |
| `checker` | `read_scene(image)` → `Reading` (shape, colour, row, column, background), `compare`/`check` → `{attribute: right}` for the four scored attributes `ATTRIBUTES` |
| `vocab` | `tokenizer_strings()` → the specials and words a word-level tokenizer needs; `split_words`; `world_texts` (imported on its own: it reads the runtime's prompt builders, so it costs torch) |

What the later slices do with it (the contract):
* **Tokenizer vocabulary.** The word-level `tokenizer.json` is built from `vocab.tokenizer_strings()`:
  specials as added tokens (the runtime looks them up by string), words split on whitespace only.
  Thinking-mode plan sentences are not fixed by TOY_WORLD.md; the slice that defines them passes them as
  `extra_texts`, so the vocabulary still comes from one place.
* **Training data.** Scenes from `sample_scene(rng)` (training combinations only, by default), rendered
  with `render`; text-to-image pairs `caption(scene)` → picture; understanding `questions_and_answers`;
  editing `random_edit(rng, scene, TRAINING)` so that no held-out combination appears as source, target or
  caption. Every draw takes a seed or a `numpy.random.Generator`, so a data set is regenerated exactly.
* **The gate in `bench/`.** Prompts from `caption` over `HELD_OUT` and training combinations; each output
  image scored with `checker.check(image, expected)` per attribute (the checker resizes any size to 128²
  first, as TOY_WORLD.md says checks do); understanding answers compared with `answer` exactly; edits
  scored on `edit.target` (changed attribute right, the other three kept). One edit changes the index by
  ±1 or ±2 (background), 3 × Δcell (move), 27 × Δcolour or 162 × Δshape, so only a move between cells 7
  apart links two held-out combinations: a held-out edit set has a held-out source or a held-out target.

The checker is 100 % right on rendered ground truth for every combination at the extreme sizes and
jitters, also after a Gaussian blur of radius 1.5 px and after resizing to 256² or 64² (tests/model/
test_toyworld_checker.py). TOY_WORLD.md names no blur strength: at radius 2 the smallest red triangles on
white start to read orange. Decisions where TOY_WORLD.md is open are listed in each module's docstring.
"""

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
    "ATTRIBUTES", "BACKGROUNDS", "COLOURS", "COLUMNS", "EDIT_KINDS", "HELD_OUT", "NUM_COMBINATIONS", "QUESTIONS",
    "ROWS", "SHAPES", "TRAINING", "Combination", "Edit", "Reading", "Scene", "answer", "caption", "check",
    "combination", "combination_index", "compare", "make_edit", "questions_and_answers", "random_edit",
    "read_scene", "render", "render_array", "sample_scene", "scene_of",
]
