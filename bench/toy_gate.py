"""The gate of the trained toy checkpoint (issue 12), measured through the service as a user meets it.

    .venv/bin/python bench/toy_gate.py [--model DIR] [--per-set 70] [--parts t2i,thinking,understand,edit,reconstruct]

Starts the embedded stack (gateway, worker, reaper; the checkpoint given, default settings otherwise) and, over
gRPC with the client SDK:
* text-to-image of 128 × 128 pictures for the held-out combinations and as many training combinations, with the
  turbo and the normal decoder, SPRINT off and on; each picture read back by the pixel checker
  (`workers.model.toyworld.check`): per attribute and all four right;
* thinking mode (turbo): the same pictures' figures, and whether the plan sentence names every attribute;
* understanding of rendered scenes of held-out combinations: each question answered exactly;
* editing of rendered scenes: per instruction form, the changed attribute right and the other three kept.
Reconstruction (tokenizer → decoder → VAE) has no job kind: it runs on the checkpoint's parts in this process
(`workers.model.toyworld.train.image_gate`), also from the designed codes, which isolates the decoder.

Prints each figure with the issue's bar beside it and writes them all to `--json` if given. Seeds are fixed,
so a run is repeatable. Every job is a normal job of the stack: the run takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import signal
import socket
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from client import LladaClient, state_name  # noqa: E402
from server import embedded  # noqa: E402
from workers.model import toyworld as world  # noqa: E402
from workers.model.toyworld.texts import DESCRIBE  # noqa: E402

PARTS = ("t2i", "thinking", "understand", "edit", "reconstruct")
SIDE = 128  # the world's pictures: a 4 × 4 backbone grid at resolution_multiplier 2
JOB_TIMEOUT_S = 600.0
WINDOW = 50
# The bars (fractions).
BAR_HELD_OUT_EACH, BAR_HELD_OUT_ALL, BAR_TRAINING_ALL = 0.85, 0.60, 0.85
BAR_UNDERSTAND, BAR_DESCRIBE, BAR_EDIT, BAR_RECONSTRUCT = 0.95, 0.80, 0.70, 0.95


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def combination_sets(per_set: int) -> dict[str, list[int]]:
    """The held-out combinations and an evenly spread sample of training ones, `per_set` of each."""
    def spread(indices):
        step = max(1, len(indices) // per_set)
        return list(indices[::step][:per_set])
    return {"held-out": spread(world.HELD_OUT), "training": spread(world.TRAINING)}


class Tally:
    """Counts of right answers per (figure, attribute)."""

    def __init__(self) -> None:
        self.right: dict[tuple[str, str], int] = defaultdict(int)
        self.total: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, figure: str, attribute: str, ok: bool) -> None:
        self.total[figure, attribute] += 1
        self.right[figure, attribute] += bool(ok)

    def add_check(self, figure: str, result: dict[str, bool]) -> None:
        for attribute, ok in result.items():
            self.add(figure, attribute, ok)
        self.add(figure, "all four", all(result.values()))

    def set(self, figure: str, attribute: str, fraction: float, n: int) -> None:
        self.total[figure, attribute] = n
        self.right[figure, attribute] = round(fraction * n)

    def rows(self) -> list[tuple[str, str, float, int]]:
        return [(f, a, self.right[f, a] / n, n) for (f, a), n in self.total.items()]


def bar_for(figure: str, attribute: str) -> float | None:
    if figure.startswith(("t2i", "thinking")):
        if "held-out" in figure:
            return BAR_HELD_OUT_ALL if attribute == "all four" else BAR_HELD_OUT_EACH
        return BAR_TRAINING_ALL if attribute == "all four" else None
    if figure.startswith("understand"):
        return BAR_DESCRIBE if attribute == DESCRIBE else BAR_UNDERSTAND
    if figure.startswith("edit"):
        return BAR_EDIT if attribute == "changed right, others kept" else None
    if figure.startswith("reconstruct") and "designed" not in figure:
        return BAR_RECONSTRUCT if attribute != "all four" else None
    return None


def run_all(client: LladaClient, work: list[tuple[object, object]]):
    """(submit callable, context) pairs → (final job, context), in order; at most WINDOW jobs queued at once
    (below the default tenant's queue limit, which refuses more)."""
    for start in range(0, len(work), WINDOW):
        submitted = [(submit().id, context) for submit, context in work[start:start + WINDOW]]
        for job_id, context in submitted:
            yield client.wait(job_id, timeout=JOB_TIMEOUT_S), context


def image_of(client: LladaClient, job, scratch: Path) -> Image.Image | None:
    if state_name(job) != "SUCCEEDED":
        return None
    paths = client.download(job, scratch / f"{job.id}.png")
    return Image.open(paths[0]).convert("RGB")


def run_t2i(client, tally: Tally, sets, scratch: Path, *, thinking: bool) -> None:
    variants = [("turbo", False)] if thinking else [("turbo", False), ("turbo", True), ("normal", False), ("normal", True)]
    plan_figure = "thinking plan names every attribute"
    for decoder, sprint in variants:
        name = ("thinking" if thinking else "t2i") + f" {decoder}" + (" sprint" if sprint else "")
        work = []
        for set_name, indices in sets.items():
            for index in indices:
                comb = world.combination(index)
                params = {"width": SIDE, "height": SIDE, "seed": index, "decoder": decoder,
                          "sprint": {"enabled": sprint}, "mode": "thinking" if thinking else "normal"}
                submit = functools.partial(client.submit_text_to_image, world.caption(comb), **params)
                work.append((submit, (f"{name} {set_name}", comb)))
        for job, (figure, comb) in run_all(client, work):
            image = image_of(client, job, scratch)
            result = world.check(image, comb) if image is not None else dict.fromkeys(world.ATTRIBUTES, False)
            tally.add_check(figure, result)
            if thinking:
                plan = job.outputs.thinking_text
                named = all(word in plan.split() for word in (comb.shape, comb.colour, comb.row, comb.column, comb.background))
                tally.add(plan_figure, figure.rsplit(" ", 1)[-1], named)


def run_understand(client, tally: Tally, sets, seed: int) -> None:
    work = []
    for index in sets["held-out"]:
        scene = world.scene_of(index, seed + index)
        image = png(world.render(scene))
        for question, expected in world.questions_and_answers(scene):
            work.append((functools.partial(client.submit_understand, image, question), (question, expected)))
    for job, (question, expected) in run_all(client, work):
        tally.add("understand held-out", question, state_name(job) == "SUCCEEDED" and job.outputs.text.strip() == expected)


def run_edit(client, tally: Tally, sets, seed: int) -> None:
    """Sources from both sets; every instruction form on each; scored on the edit's target scene."""
    import numpy as np

    from workers.model.toyworld.edits import current_value, edit_values

    rng = np.random.default_rng(seed)
    work = []
    for set_name, indices in sets.items():
        for index in indices:
            source = world.scene_of(index, rng)
            for kind in world.EDIT_KINDS:
                values = [v for v in edit_values(kind) if v != current_value(source, kind)]
                edit = world.make_edit(source, kind, values[int(rng.integers(len(values)))])
                submit = functools.partial(client.submit_edit, png(world.render(source)), edit.instruction, seed=index)
                work.append((submit, (f"edit {set_name}", kind, edit)))
    scratch = Path(tempfile.mkdtemp(prefix="toy-gate-edit-"))
    for job, (figure, kind, edit) in run_all(client, work):
        image = image_of(client, job, scratch)
        result = world.check(image, edit.target) if image is not None else dict.fromkeys(world.ATTRIBUTES, False)
        changed = kind  # the edit kinds are named after the attributes they change
        ok = result[changed] and all(v for a, v in result.items() if a != changed)
        tally.add(f"{figure} {kind}", "changed right, others kept", ok)
        tally.add(f"{figure} {kind}", f"{changed} right", result[changed])


def run_reconstruct(model: Path, tally: Tally, per_set: int) -> None:
    """The image path's own gate (tokenizer's 64² view → decoder → VAE → checker), on the checkpoint's parts."""
    from workers.model.toyworld.train.image_gate import reconstruction_gate

    figures = reconstruction_gate(model, per_split=per_set)
    for split in ("held_out", "training"):
        for decoder, summary in figures[split].items():
            for attribute, percent in summary.items():
                tally.set(f"reconstruct {decoder} {split.replace('_', '-')}", attribute.replace("_", " "),
                          percent / 100, per_set)


def report(tally: Tally, seconds: float) -> list[dict]:
    rows = []
    print(f"\ntoy gate: {seconds:.0f} s")
    print(f"{'figure':<48} {'attribute':<32} {'measured':>9} {'bar':>6}  n")
    for figure, attribute, value, n in sorted(tally.rows()):
        bar = bar_for(figure, attribute)
        mark = "" if bar is None else ("ok" if value >= bar else "BELOW")
        print(f"{figure:<48} {attribute:<32} {value:>8.1%} {'' if bar is None else f'{bar:.0%}':>6}  {n:<4} {mark}")
        rows.append({"figure": figure, "attribute": attribute, "value": value, "n": n, "bar": bar})
    return rows


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: the embedded default)")
    parser.add_argument("--per-set", type=int, default=70, help="combinations per set (held-out, training)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    sets = combination_sets(args.per_set)
    signal.signal(signal.SIGTERM, _interrupt)  # a timeout unwinds like Ctrl-C: the stack is always stopped
    tally = Tally()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toy-gate-") as tmp:
        settings = embedded.settings_for(Path(tmp) / "stack", f"127.0.0.1:{free_port()}", 0,
                                         f"127.0.0.1:{free_port()}", 0)
        if args.model is not None:
            settings.model_path = str(args.model.resolve())
        model = Path(settings.model_path)
        service_parts = [p for p in parts if p != "reconstruct"]
        if service_parts:
            info = embedded.start_stack(settings, log=print)
            try:
                with LladaClient(info.grpc_address, api_key=info.api_key) as client:
                    scratch = Path(tmp) / "outputs"
                    scratch.mkdir()
                    if "t2i" in parts:
                        run_t2i(client, tally, sets, scratch, thinking=False)
                    if "thinking" in parts:
                        run_t2i(client, tally, sets, scratch, thinking=True)
                    if "understand" in parts:
                        run_understand(client, tally, sets, args.seed)
                    if "edit" in parts:
                        run_edit(client, tally, sets, args.seed)
            finally:
                embedded.stop_stack(Path(info.data_dir))
        if "reconstruct" in parts:
            run_reconstruct(model, tally, args.per_set)
    rows = report(tally, time.perf_counter() - started)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
