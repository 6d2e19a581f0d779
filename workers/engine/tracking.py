"""Progress and cancellation flags of the jobs an actor is working on, keyed by the caller's request key.

The caller (the replica, in the worker process) polls `progress(key)` and calls `cancel(key)`; the model
code running in the actor reports through `reporter(key)` and checks `should_cancel(key)` between steps.
"""

from __future__ import annotations

import threading


class JobTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # model code reports from a worker thread
        self._progress: dict[str, tuple[str, int, int]] = {}
        self._cancelled: set[str] = set()

    def open(self, key: str, stage: str) -> None:
        with self._lock:
            self._progress[key] = (stage, 0, 0)

    def close(self, key: str) -> None:
        with self._lock:
            self._progress.pop(key, None)
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
        with self._lock:
            return self._progress.get(key)
