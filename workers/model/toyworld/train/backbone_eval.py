"""A code-level gate of the trained backbone, run through the runtime's own generation functions.

`evaluate_backbone(checkpoint_dir)` loads the checkpoint with the runtime's strict loaders
(`load_backbone`, `TextTokenizer.from_folder`) and calls `generation.text_to_image_tokens`,
`understand_tokens` and `edit_tokens` with their default settings (t2i: steps 8, cfg 2.0; thinking mode with
its defaults; understanding: steps 32; editing: steps 8, cfg_text 4.0) on the held-out combinations and as
many training combinations. No image model is involved: generated codes are read back with
`codes.read_codes`, inputs are the designed codes (`scene_codes`: 4 × 4 generation view for t2i targets and
edit sources, 8 × 8 reading view for understanding), so this measures the backbone alone.

Figures (percent): per attribute and all four for t2i (SPRINT off and on) and thinking mode, the plan
sentence naming the prompt's combination, understanding exact match per question, editing per instruction
form (changed attribute right, the other three kept, both).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from workers.model import generation
from workers.model.backbone import load_backbone
from workers.model.config import BackboneConfig
from workers.model.sampler import SprintOptions
from workers.model.tasks import EditTask, UnderstandTask
from workers.model.text_tokenizer import TextTokenizer

from ..checker import ATTRIBUTES, compare
from ..codes import GENERATION_GRID, READING_GRID, read_codes, scene_codes
from ..edits import EDIT_KINDS, current_value, edit_values, make_edit
from ..texts import QUESTIONS, answer, caption
from ..world import HELD_OUT, TRAINING, Combination, combination, scene_of
from .backbone_data import picture_task
from .thinking_plan import read_plan

_EDIT_ATTRIBUTE = {"colour": "colour", "shape": "shape", "position": "position", "background": "background"}


def training_sample(count: int) -> list[int]:
    """`count` training combinations spread evenly over the index range."""
    picks = np.linspace(0, len(TRAINING) - 1, count).round().astype(int)
    return [TRAINING[i] for i in picks]


def _percent(hits: list[bool]) -> float | None:
    return round(100.0 * sum(hits) / len(hits), 1) if hits else None


class _Tally:
    def __init__(self) -> None:
        self.hits: dict[str, list[bool]] = {}

    def add(self, key: str, ok: bool) -> None:
        self.hits.setdefault(key, []).append(bool(ok))

    def add_reading(self, prefix: str, codes, expected: Combination) -> None:
        right = compare(read_codes(np.asarray(codes).reshape(GENERATION_GRID, GENERATION_GRID)), expected)
        for attribute in ATTRIBUTES:
            self.add(f"{prefix}/{attribute}", right[attribute])
        self.add(f"{prefix}/all four", all(right.values()))

    def figures(self) -> dict[str, float]:
        return {key: _percent(v) for key, v in self.hits.items()}


def evaluate_set(model, tok: TextTokenizer, indices: list[int], *, seed: int = 0, thinking: bool = True,
                 sprint: bool = True, understanding: bool = True, editing: bool = True,
                 edit_cfg_text_scale: float | None = None) -> dict[str, float]:
    """`edit_cfg_text_scale`: None = the runtime's default (4.0); another value to see how guidance bounds editing."""
    tally = _Tally()
    rng = np.random.default_rng(seed)
    for index in indices:
        comb = combination(index)
        scene = scene_of(comb, rng)
        prompt = caption(comb)
        tally.add_reading("t2i", generation.text_to_image_tokens(model, tok, picture_task(prompt)).codes, comb)
        if sprint:
            out = generation.text_to_image_tokens(model, tok, picture_task(prompt, sprint=SprintOptions()))
            tally.add_reading("t2i sprint", out.codes, comb)
        if thinking:
            out = generation.text_to_image_tokens(model, tok, picture_task(prompt, mode="thinking"))
            tally.add_reading("thinking", out.codes, comb)
            tally.add("thinking/plan names the prompt", read_plan(out.thinking or "") == comb)
        if understanding:
            codes = scene_codes(scene, READING_GRID).reshape(-1).tolist()
            for question in QUESTIONS:
                reply = generation.understand_tokens(model, tok, UnderstandTask(question), codes, READING_GRID,
                                                     READING_GRID)
                tally.add(f"understand/{question}", reply == answer(question, comb))
        if editing:
            source = scene
            codes = scene_codes(source, GENERATION_GRID).reshape(-1).tolist()
            for kind in EDIT_KINDS:
                values = [v for v in edit_values(kind) if v != current_value(source, kind)]
                edit = make_edit(source, kind, values[int(rng.integers(len(values)))])
                scale = {} if edit_cfg_text_scale is None else {"cfg_text_scale": edit_cfg_text_scale}
                out = generation.edit_tokens(model, tok, EditTask(edit.instruction, **scale), codes, GENERATION_GRID,
                                             GENERATION_GRID)
                right = compare(read_codes(np.asarray(out.codes).reshape(GENERATION_GRID, GENERATION_GRID)),
                                edit.target)
                changed = _EDIT_ATTRIBUTE[kind]
                kept = all(ok for attribute, ok in right.items() if attribute != changed)
                tally.add(f"edit/{kind}/changed right", right[changed])
                for attribute in ATTRIBUTES:
                    if attribute != changed:
                        tally.add(f"edit/{kind}/{attribute} kept", right[attribute])
                tally.add(f"edit/{kind}/others kept", kept)
                tally.add(f"edit/{kind}/both", right[changed] and kept)
    return tally.figures()


def load_for_eval(checkpoint_dir: str | Path):
    folder = Path(checkpoint_dir)
    config = BackboneConfig.from_file(folder / "config.json")
    return load_backbone(folder), TextTokenizer.from_folder(folder, config)


def evaluate_backbone(checkpoint_dir: str | Path, *, held_out: int = len(HELD_OUT), training: int = len(HELD_OUT),
                      seed: int = 0, out_json: str | Path | None = None, **parts) -> dict:
    """Figures on `held_out` held-out and `training` training combinations (all 70 and 70 by default).
    `parts`: thinking / sprint / understanding / editing = False to skip one."""
    torch.set_num_threads(1)
    model, tok = load_for_eval(checkpoint_dir)
    report = {}
    for name, indices in (("held_out", list(HELD_OUT[:held_out])), ("training", training_sample(training))):
        began = time.perf_counter()
        report[name] = evaluate_set(model, tok, indices, seed=seed, **parts) if indices else {}
        report[f"{name}_seconds"] = round(time.perf_counter() - began, 1)
        report[f"{name}_combinations"] = len(indices)
    if out_json is not None:
        Path(out_json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Code-level gate of a trained toy backbone.")
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--held-out", type=int, default=len(HELD_OUT))
    parser.add_argument("--training", type=int, default=len(HELD_OUT))
    parser.add_argument("--out-json")
    args = parser.parse_args()
    print(json.dumps(evaluate_backbone(args.checkpoint_dir, held_out=args.held_out, training=args.training,
                                       out_json=args.out_json), indent=2))
