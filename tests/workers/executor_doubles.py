"""A test double for workers.executor.PipelineExecutor whose steps the tests control.

`ScriptedExecutorDouble` runs `steps` steps of `step_s` seconds, reporting progress and checking
`should_cancel()` between steps like the model does. The job's text (prompt / question / instruction)
picks a behaviour, so tests in other processes (a real Celery worker) can script it too:

    "fail-input"  ModelInputError on field `width` at step 1     "oom"   torch.OutOfMemoryError at step 1
    "crash"       RuntimeError at step 1                          "die"   SIGKILL of its own process at step 1
    "slow"        step_s × 6 per step                            anything else: succeeds
    "hold"        after the last step, holds its output for 1 s before handing it back (a pause between
                  computing and uploading, where a chaos test freezes the worker)

Each run appends a line "<text> <pid>" to `<markers>/runs.log` when LLADA_TEST_MARKERS names a folder,
so a test can count how many times a job really ran. Settings of the double come from the environment
(LLADA_TEST_STEPS, LLADA_TEST_STEP_S) so a worker subprocess can be configured too; with
LLADA_TEST_RANDOM_SEED=1 an image job without a seed draws a random one, like the model, so two attempts of
one job make different images. Each image carries its seed in a PNG text chunk (`png_seed`): a test can
tell which attempt's bytes a client downloads.
"""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import time
from pathlib import Path

from PIL import Image, PngImagePlugin

from shared.jobs import JobKind
from workers.executor import IMAGE_OUTPUT, JobOutput
from workers.model.errors import Cancelled, ModelInputError


DRAWN_SEED = 2**62 + 5  # the seed the double "draws" for an image job submitted without one
HOLD_S = 1.0  # how long "hold" keeps its output before handing it back
TEXT_FIELD = {JobKind.TEXT_TO_IMAGE: "prompt", JobKind.UNDERSTAND: "question", JobKind.EDIT: "instruction"}


def job_text(kind: JobKind, params) -> str:
    return getattr(params, TEXT_FIELD[kind])


def runs_logged(markers: Path) -> list[tuple[str, int]]:
    log = markers / "runs.log"
    if not log.exists():
        return []
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1])) for line in log.read_text().splitlines() if line]


class ScriptedExecutorDouble:
    def __init__(self, settings=None, *, steps: int | None = None, step_s: float | None = None):
        self.steps = steps if steps is not None else int(os.environ.get("LLADA_TEST_STEPS", "5"))
        self.step_s = step_s if step_s is not None else float(os.environ.get("LLADA_TEST_STEP_S", "0.01"))
        markers = os.environ.get("LLADA_TEST_MARKERS")
        self.markers = Path(markers) if markers else None
        self.steps_run = 0

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None) -> JobOutput:
        text = job_text(kind, params)
        if self.markers is not None:
            with open(self.markers / "runs.log", "a") as log:
                log.write(f"{text} {os.getpid()}\n")
        step_s = self.step_s * (6 if "slow" in text else 1)
        for step in range(1, self.steps + 1):
            if should_cancel():
                raise Cancelled()
            if step == 1:
                self._misbehave(text)
            time.sleep(step_s)
            self.steps_run += 1
            progress("denoise", step, self.steps)
        if "hold" in text:
            time.sleep(HOLD_S)
        if kind is JobKind.UNDERSTAND:
            return JobOutput(text=f"an answer to: {text}", timings={"denoise": self.steps * step_s})
        # Like the model: the request's seed, or one drawn for it (a fixed one here, for the assertions).
        seed = params.seed if params.seed is not None else self.draw_seed()
        return JobOutput(objects={IMAGE_OUTPUT: png_with_seed(seed)}, thinking=None,
                         timings={"denoise": self.steps * step_s, "decode": 0.0}, seed=seed)

    @staticmethod
    def draw_seed() -> int:
        if os.environ.get("LLADA_TEST_RANDOM_SEED") == "1":
            return random.randrange(2**62)
        return DRAWN_SEED

    @staticmethod
    def _misbehave(text: str) -> None:
        if "fail-input" in text:
            raise ModelInputError("width", "is too wide for this model")
        if "oom" in text:
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "crash" in text:
            raise RuntimeError("the model broke")
        if "die" in text:
            os.kill(os.getpid(), signal.SIGKILL)


def png_with_seed(seed: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("seed", str(seed))
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def png_seed(data: bytes) -> int:
    """The seed an image of these doubles was made with."""
    with Image.open(io.BytesIO(data)) as image:
        return int(image.text["seed"])


class PausingExecutorDouble(ScriptedExecutorDouble):
    """Its first run computes, then freezes before handing back its output (as a SIGSTOP or a GC pause
    would) until `resume` is set; every run's image carries the run's number as its seed."""

    def __init__(self, *, steps: int = 3, step_s: float = 0.01):
        super().__init__(steps=steps, step_s=step_s)
        self.paused = threading.Event()
        self.resume = threading.Event()
        self._runs = 0
        self._lock = threading.Lock()

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None) -> JobOutput:
        with self._lock:
            self._runs += 1
            number = self._runs
        output = super().run(kind, params, inputs, progress=progress, should_cancel=should_cancel)
        output.seed = number
        output.objects = {IMAGE_OUTPUT: png_with_seed(number)}
        if number == 1:
            self.paused.set()
            if not self.resume.wait(30):
                raise AssertionError("the test never resumed the paused run")
        return output
