"""The worker's readiness file (`Settings.worker_ready_file`), which `llada-healthcheck worker` reads.

It exists, and is fresh, while the worker consumes with its model loaded: a thread of the worker's main
process rewrites it every `REFRESH_S` once Celery is ready and removes it as soon as `is_ready` says no
(draining, the model failed). The worker also removes it when it starts (a file a killed predecessor left in
the same container would look ready) and when it stops. A worker that hangs or dies leaves a file that ages:
the check allows `MAX_AGE_S`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from shared.health_file import remove_health_file, write_health_file

log = logging.getLogger("llada.worker")

REFRESH_S = 5.0
# A few refreshes missed on a loaded machine, not a hung process.
MAX_AGE_S = 30.0


class ReadinessFile:
    def __init__(self, path: Path | None, is_ready: Callable[[], bool], refresh_s: float = REFRESH_S):
        self._path = path
        self._is_ready = is_ready
        self._refresh_s = refresh_s
        # Check-then-write and remove exclude each other: a drain never finds its removal undone.
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._warned = False

    def start(self) -> None:
        """Celery consumes now: keep the file while the worker is ready."""
        if self._path is not None:
            threading.Thread(target=self._keep, name="readiness-file", daemon=True).start()

    def _keep(self) -> None:
        while not self._stopped.is_set():
            self.refresh()
            self._stopped.wait(self._refresh_s)

    def refresh(self) -> None:
        with self._lock:
            if self._path is None or self._stopped.is_set():
                return
            try:
                if self._is_ready():
                    write_health_file(self._path, stale_after_s=MAX_AGE_S, pid=os.getpid())
                else:
                    remove_health_file(self._path)
            except OSError:
                if not self._warned:  # the worker runs on; its health check will say why it is unready
                    log.warning("cannot write the readiness file", extra={"path": str(self._path)}, exc_info=True)
                    self._warned = True

    def clear(self, *, stop: bool = False) -> None:
        """Not ready (now): remove the file; `stop` also ends the refreshing for good."""
        with self._lock:
            if stop:
                self._stopped.set()
            if self._path is not None:
                try:
                    remove_health_file(self._path)
                except OSError:
                    log.warning("cannot remove the readiness file", extra={"path": str(self._path)}, exc_info=True)
