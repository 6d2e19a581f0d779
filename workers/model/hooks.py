"""The caller's hooks into a running call, and the per-call stage clock: one definition for the model, the engine
and the worker. Torch-free, so the worker imports it without loading the model.

* `Progress(stage, step, total)`: told as a stage moves (`tokenize`, `think`, `denoise`, `decode`).
* `ShouldCancel()`: asked between stages and steps; True stops the call with `Cancelled`.
* `Answer(text)`: an understanding call's answer so far, told as its blocks settle (it only grows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from workers.model.errors import Cancelled

Progress = Callable[[str, int, int], None]
ShouldCancel = Callable[[], bool]
Answer = Callable[[str], None]

T = TypeVar("T")


class StageClock:
    """Per-call stage bookkeeping: the cancellation check before each stage and wall-clock seconds per stage
    (for the engine these include waiting for the stage's actor)."""

    def __init__(self, progress: Progress | None, should_cancel: ShouldCancel | None):
        self.progress, self.should_cancel = progress, should_cancel
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.should_cancel is not None and self.should_cancel():
            raise Cancelled(f"cancelled before {name}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started

    def run(self, name: str, work: Callable[[], T]) -> T:
        with self.stage(name):
            return work()

    def carve(self, stage: str, part: str, seconds: float) -> None:
        """Report `seconds` of `stage` under their own name (thinking's text pass runs inside denoise)."""
        if seconds:
            self.timings[stage] -= seconds
            self.timings[part] = self.timings.get(part, 0.0) + seconds

    def report(self, stage: str) -> None:
        """A one-step stage is done (the tokenize stage's single progress event)."""
        if self.progress is not None:
            self.progress(stage, 1, 1)


__all__ = ["Answer", "Progress", "ShouldCancel", "StageClock"]
