"""Progress and cancellation flags of the jobs an actor is working on, keyed by the caller's request key.

The caller (the replica, in the worker process) polls `progress(key)` and calls `cancel(key)`; the model
code running in the actor reports through `reporter(key)` and checks `should_cancel(key)` between steps.
A finished job's last progress stays readable for a while (`FinishedProgress`): a stage shorter than one
poll interval would otherwise never reach the caller's progress callback.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

# Finished jobs whose last progress an actor remembers; the caller reads it right after the call returns.
FINISHED_KEPT = 1024


class FinishedProgress:
    """The last progress of recently finished keys, the oldest forgotten beyond `FINISHED_KEPT`."""

    def __init__(self, kept: int = FINISHED_KEPT) -> None:
        self._kept = kept
        self._last: OrderedDict[str, tuple[str, int, int]] = OrderedDict()

    def record(self, key: str, progress: tuple[str, int, int] | None) -> None:
        if progress is None:
            return
        self._last.pop(key, None)
        self._last[key] = progress
        while len(self._last) > self._kept:
            self._last.popitem(last=False)

    def get(self, key: str) -> tuple[str, int, int] | None:
        return self._last.get(key)


class JobTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # model code reports from a worker thread
        self._progress: dict[str, tuple[str, int, int]] = {}
        self._cancelled: set[str] = set()
        self._finished = FinishedProgress()

    def open(self, key: str, stage: str) -> None:
        with self._lock:
            self._progress[key] = (stage, 0, 0)

    def close(self, key: str) -> None:
        with self._lock:
            self._finished.record(key, self._progress.pop(key, None))
            self._cancelled.discard(key)

    def reporter(self, key: str):
        def report(stage: str, step: int, total: int) -> None:
            with self._lock:
                if key in self._progress:
                    self._progress[key] = (stage, int(step), int(total))

        return report

    def should_cancel(self, key: str):
        return lambda: key in self._cancelled

    def cancel(self, key: str) -> bool:
        with self._lock:
            if key not in self._progress:
                return False
            self._cancelled.add(key)
            return True

    def progress(self, key: str) -> tuple[str, int, int] | None:
        """The running job's progress, else the last progress of a recently finished one, else None."""
        with self._lock:
            return self._progress.get(key) or self._finished.get(key)
