"""The image path's reconstruction gate, through the runtime's unchanged loaders: scene → image tokenizer
(64² generation view) → decoder (normal 50 steps with CFG, turbo 8 steps) → VAE → `toyworld.check`, on the
70 held-out and 70 training combinations of `data.evaluation_scenes`. Also the tokenizer's codes read back,
and turbo decoding of the designed codes (which isolates the decoder from tokenizer errors)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from workers.model.decoder import load_decoder
from workers.model.image_tokenizer import load_image_tokenizer
from workers.model.toyworld import check
from workers.model.toyworld.codes import GENERATION_GRID, scene_codes
from workers.model.toyworld.train.data import evaluation_scenes, generation_view, render_image


def _summary(checks: list[dict]) -> dict:
    return {**{a: round(100 * float(np.mean([c[a] for c in checks])), 1) for a in checks[0]},
            "all_four": round(100 * float(np.mean([all(c.values()) for c in checks])), 1)}


def reconstruction_gate(checkpoint: str | Path, *, seed: int = 0, normal_steps: int = 50, turbo_steps: int = 8,
                        work_dir: str | Path | None = None, per_split: int = 70) -> dict:
    tokenizer = load_image_tokenizer(checkpoint)
    normal = load_decoder(checkpoint, mode="normal")
    turbo = normal.load_sibling(checkpoint, "turbo")
    report: dict = {}
    started = time.monotonic()
    for split in ("held_out", "training"):
        scenes = [s for k, s in evaluation_scenes(seed) if k == split][:per_split]
        rows = {"normal": [], "turbo": [], "turbo_designed_codes": []}
        for i, scene in enumerate(scenes):
            codes, h, w = tokenizer.encode(generation_view(render_image(scene)))
            rows["normal"].append(check(normal.decode(codes, h, w, steps=normal_steps, seed=i,
                                                      resolution_multiplier=2), scene))
            rows["turbo"].append(check(turbo.decode(codes, h, w, steps=turbo_steps, seed=i,
                                                    resolution_multiplier=2), scene))
            designed = scene_codes(scene, GENERATION_GRID).reshape(-1).tolist()
            rows["turbo_designed_codes"].append(check(turbo.decode(designed, GENERATION_GRID, GENERATION_GRID,
                                                                   steps=turbo_steps, seed=i,
                                                                   resolution_multiplier=2), scene))
        report[split] = {name: _summary(r) for name, r in rows.items()}
    report["wall_s"] = round(time.monotonic() - started, 1)
    if work_dir is not None:
        path = Path(work_dir) / "image_gate.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Reconstruction gate of a trained toy checkpoint's image path.")
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--per-split", type=int, default=70)
    args = parser.parse_args()
    print(json.dumps(reconstruction_gate(args.checkpoint_dir, per_split=args.per_split), indent=2))
