"""What a running attempt does besides computing: keep its lease, report progress, ask whether to stop.

Each of these writes or reads is fenced by the attempt's token (shared.attempts). The first one that finds
the attempt fenced off sets `Lease.fenced`; the model's next cancellation check then stops the run, and the
runner writes nothing more. A database hiccup is not a fence: a failed heartbeat is tried again at the next
beat, a failed progress write is skipped, a failed cancel check lets the step go on — only a lease that
really runs out (no heartbeat for `heartbeat_timeout_s`) makes the job the reaper's.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from shared import attempts
from shared.attempts import Attempt, AttemptStatus
from shared.db.errors import is_transient_db_error
from shared.jobs import Stage
from shared.tracing import trace_id_of
from workers import metrics

if TYPE_CHECKING:
    from workers.tasks import WorkerContext

log = logging.getLogger("llada.worker")

# Progress is written to the database (and published) at most this often, plus at every stage change
# and stage end: a tiny model steps in milliseconds, and each write takes SQLite's write lock.
PROGRESS_MIN_INTERVAL_S = 0.2
# Model stage names → the service's Stage. The thinking pass (docs/model.md §3.3) is reported as its own
# THINK stage so users can tell it from the image's denoising.
STAGE_OF = {"tokenize": Stage.TOKENIZE, "think": Stage.THINK, "denoise": Stage.DENOISE, "decode": Stage.DECODE}
# How long an ending attempt waits for its heartbeat thread: a beat stuck in a database call that does not return
# must not hold the job's thread (and the worker's slot) with it. The daemon thread ends with its call.
HEARTBEAT_JOIN_S = 5.0


class Lease:
    """Renews the attempt's heartbeat in a thread while the attempt runs; `fenced` is set once any fenced
    write or check finds the attempt no longer owns its job."""

    def __init__(self, ctx: "WorkerContext", attempt: Attempt):
        self.ctx = ctx
        self.attempt = attempt
        self.fenced = threading.Event()
        # Why the attempt is returning its job unfinished (the worker's drain ran out), or None.
        self.handing_back: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{attempt.job_id}", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_JOIN_S)

    def lose(self, why: str) -> None:
        if not self.fenced.is_set():
            log.info("attempt fenced off; stopping it", extra=self.log_fields(reason=why))
            self.fenced.set()

    def log_fields(self, **more) -> dict:
        fields = {"job_id": self.attempt.job_id, "attempt": self.attempt.number, "tenant": self.attempt.job.tenant,
                  "worker_id": self.attempt.worker_id}
        trace_id = trace_id_of(self.attempt.job.trace_context)
        if trace_id:  # where tracing is on: a log line leads to the job's trace
            fields["trace_id"] = trace_id
        return {**fields, **more}

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_interval_s):
            try:
                if not self.ctx.db(attempts.heartbeat, self.attempt):
                    self.lose("heartbeat refused")
                    return
            except Exception as err:  # a database hiccup: try again next beat; the timeout is several beats long
                log.warning("heartbeat failed; retrying", extra=self.log_fields(error=type(err).__name__))

    def should_cancel(self) -> bool:
        """The model's check between steps: stop for a cancel request or a fence, go on otherwise."""
        if self.fenced.is_set() or self.handing_back:
            return True
        if self.ctx.lifecycle.drain_expired():
            self.handing_back = "the worker is shutting down and its drain timeout ran out"
            return True
        try:
            status = self.ctx.db(attempts.check_attempt, self.attempt)
        except Exception as err:
            if not is_transient_db_error(err):
                raise
            # The database is away for a moment: computing on is right; the lease decides if it lasts.
            log.warning("cancel check failed; going on", extra=self.log_fields(error=type(err).__name__))
            return False
        if status is AttemptStatus.FENCED:
            self.lose("cancel check found the job taken")
            return True
        return status is AttemptStatus.CANCEL_REQUESTED


def write_fenced(ctx: "WorkerContext", lease: Lease, what: str, write, *args) -> bool:
    """One of the attempt's fenced writes while it runs. False when it did not land: skipped for a database
    hiccup (the next one will do), or refused because the attempt is fenced off (the lease is then lost)."""
    try:
        written = ctx.db(write, lease.attempt, *args)
    except Exception as err:
        if not is_transient_db_error(err):
            raise
        log.warning(f"{what} write failed; skipped", extra=lease.log_fields(error=type(err).__name__))
        return False
    if not written:
        lease.lose(f"{what} write refused")
    return written


class ProgressReporter:
    """The executor's `progress(stage, step, total)`: throttled, fenced writes to the database, then an event."""

    def __init__(self, ctx: "WorkerContext", lease: Lease):
        self.ctx = ctx
        self.lease = lease
        self._last: tuple[Stage, int, int] | None = None
        self._last_time = 0.0
        self._steps = metrics.StepClock(lease.attempt.job.kind)

    def __call__(self, stage: str, step: int, total: int) -> None:
        self._steps.report(stage, step)  # every report, before the throttle below
        current = STAGE_OF.get(stage, Stage.DENOISE)
        now = time.monotonic()
        stage_changed = self._last is None or self._last[0] is not current
        if self.lease.fenced.is_set() or not (
                stage_changed or step >= total or now - self._last_time >= PROGRESS_MIN_INTERVAL_S):
            return
        self._last, self._last_time = (current, step, total), now
        if not write_fenced(self.ctx, self.lease, "progress", attempts.record_progress, current, step, total):
            return
        self.ctx.publish(self.lease.attempt.job_id,
                         {"type": "progress", "stage": current.value, "step": step, "total": total})


class AnswerReporter:
    """The executor's `answer(text)` for an UNDERSTAND job: the answer so far, as its blocks settle, written fenced
    as the job's output text (so GetJob, WatchJob and the front door's streamed completions show it grow), then an
    event. Not throttled: a block settles every few denoising steps, and each text supersedes the last."""

    def __init__(self, ctx: "WorkerContext", lease: Lease):
        self.ctx = ctx
        self.lease = lease

    def __call__(self, text: str) -> None:
        if self.lease.fenced.is_set():
            return
        if not write_fenced(self.ctx, self.lease, "answer", attempts.record_answer, text):
            return
        self.ctx.publish(self.lease.attempt.job_id, {"type": "answer", "chars": len(text)})
