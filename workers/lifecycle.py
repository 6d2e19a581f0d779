"""How a worker process stops (ARCHITECTURE §3): drained on SIGTERM, or unready when its model won't load.

**Drain, don't die.** The first SIGTERM starts the drain: the worker takes no new job, and the running ones
get until the drain deadline (`Settings.drain_timeout_s`) to finish. A job still running then is handed
back (re-queued at once, not counted as a failed attempt); a second SIGTERM moves the deadline to now.

**No model, no jobs.** A worker whose model fails to load hands back any job it took and stops with
`EXIT_MODEL_UNAVAILABLE`, instead of failing every job it takes. Once it has loaded, the worker may say it is
ready (workers/readiness.py).

These states live in shared memory made before the prefork pool forks, so the pool's children (where the
jobs run and the model loads) and their parent (which consumes, says it is ready, and exits) see the same
values.
"""

from __future__ import annotations

import multiprocessing
import time

NOT_DRAINING = 0.0
# The exit code of a worker that could not load its model (not 1: Celery's own failures use it).
EXIT_MODEL_UNAVAILABLE = 3


class Lifecycle:
    def __init__(self) -> None:
        # A wall-clock deadline (comparable across processes), 0 while not draining; lone values need no lock.
        self._deadline = multiprocessing.RawValue("d", NOT_DRAINING)
        self._exit_code = multiprocessing.RawValue("i", 0)
        self._model_loaded = multiprocessing.RawValue("b", 0)

    def begin_drain(self, timeout_s: float) -> None:
        """The first call starts the drain; every later one cuts it short."""
        now = time.time()
        self._deadline.value = now + timeout_s if self._deadline.value == NOT_DRAINING else now

    def draining(self) -> bool:
        return self._deadline.value != NOT_DRAINING

    def drain_expired(self) -> bool:
        """The running jobs are out of time: hand them back."""
        deadline = self._deadline.value
        return deadline != NOT_DRAINING and time.time() >= deadline

    def model_loaded(self) -> None:
        """A process of this worker has its model in memory (under prefork: the pool's child)."""
        self._model_loaded.value = True

    def ready(self) -> bool:
        """The model is loaded, and the worker neither drains nor stops for a failure."""
        return bool(self._model_loaded.value) and not self.draining() and not self.exit_code()

    def model_failed(self) -> None:
        self._exit_code.value = EXIT_MODEL_UNAVAILABLE

    def exit_code(self) -> int:
        """Non-zero once the worker must stop for a failure (its model would not load)."""
        return self._exit_code.value


# One per worker process tree: made at import, in the parent, before any fork.
lifecycle = Lifecycle()
