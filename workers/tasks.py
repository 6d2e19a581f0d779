"""`run_job(job_id)`: the Celery task body that finishes a job exactly once (ARCHITECTURE §3).

claim in the database → load inputs → run the executor with progress and cancellation checks between
steps, heart-beating meanwhile → write outputs under deterministic keys → write the terminal state.

Errors of the job itself (model errors, out of memory, input that fails only at run time) end it FAILED
with a code. Errors of the infrastructure (database, object store unreachable) are raised instead: the
job stays RUNNING, its heartbeat goes stale and the reaper sends it again, up to `max_attempts`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.orm import sessionmaker

from shared import repository as repo
from shared.db import make_engine, session_factory
from shared.jobs import InvalidArgument, JobKind, JobState, Stage, validate_params
from shared.objectstore import ObjectNotFound, result_key
from shared.settings import Settings, get_settings
from shared.states import IllegalTransition
from workers.executor import Executor, JobFailure, JobOutput, classify_failure, executor_from_settings, is_cancellation

log = logging.getLogger("llada.worker")

# Progress is written to the database (and published) at most this often, plus at every stage change
# and stage end: a tiny model steps in milliseconds, and each write takes SQLite's write lock.
PROGRESS_MIN_INTERVAL_S = 0.2
# Model stage names → the service's Stage. The thinking pass (MODEL_SPEC §3.3) is reported as its own
# THINK stage so users can tell it from the image's denoising.
STAGE_OF = {"tokenize": Stage.TOKENIZE, "encode": Stage.TOKENIZE, "think": Stage.THINK,
            "denoise": Stage.DENOISE, "decode": Stage.DECODE}
# Params message of each kind in the public API: run-time errors name fields the way the gateway does.
FIELD_PREFIX = {JobKind.TEXT_TO_IMAGE: "text_to_image", JobKind.UNDERSTAND: "understand", JobKind.EDIT: "edit"}


def new_worker_id() -> str:
    # A random suffix: a restarted container may get the same host name and pid.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerContext:
    """What a worker process talks to; built once per process."""

    settings: Settings
    sessions: sessionmaker
    store: Any   # shared.objectstore.ObjectStore
    events: Any  # shared.events.EventBus
    executor: Executor
    worker_id: str = field(default_factory=new_worker_id)

    def db(self, fn: Callable, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def publish(self, job_id: str, event: dict) -> None:
        try:
            self.events.publish(job_id, event)
        except Exception:  # best effort: watchers re-read the database
            log.warning("event publish failed", extra={"job_id": job_id}, exc_info=True)


def context_from_settings(settings: Settings, executor: Executor | None = None) -> WorkerContext:
    from shared.events import event_bus_from_settings
    from shared.objectstore import object_store_from_settings

    return WorkerContext(
        settings=settings,
        sessions=session_factory(make_engine(settings.database_url)),
        store=object_store_from_settings(settings),
        events=event_bus_from_settings(settings),
        executor=executor or executor_from_settings(settings),
    )


_context: WorkerContext | None = None
_context_pid: int | None = None
_context_lock = threading.Lock()


def worker_context() -> WorkerContext:
    """This process's context. Built lazily (after a prefork fork), so the model loads once per process."""
    global _context, _context_pid
    with _context_lock:
        if _context is None or _context_pid != os.getpid():
            _context = context_from_settings(get_settings())
            _context_pid = os.getpid()
        return _context


def warm_up() -> None:
    """Build this process's context and load the model now (a failure is left for the first job to report)."""
    try:
        load = getattr(worker_context().executor, "pipeline", None)
        if load is not None:
            load()
    except Exception:
        log.warning("model warm-up failed; the first job will try again", exc_info=True)


def run_job(job_id: str) -> str:
    """Celery task `llada.run_job`: run the job once; returns what happened (for logs)."""
    return JobRunner(worker_context()).run(job_id)


class Heartbeat:
    """Refreshes the job's heartbeat in a thread; notices when the job is no longer this worker's."""

    def __init__(self, ctx: WorkerContext, job_id: str):
        self.ctx = ctx
        self.job_id = job_id
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.settings.heartbeat_interval_s):
            try:
                if not self.ctx.db(repo.heartbeat, self.job_id, self.ctx.worker_id):
                    log.warning("job no longer owned by this worker; stopping it", extra={"job_id": self.job_id})
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: try again next beat; the timeout is several beats long
                log.warning("heartbeat failed", extra={"job_id": self.job_id}, exc_info=True)


class ProgressReporter:
    """The executor's `progress(stage, step, total)`: throttled writes to the database and the event bus."""

    def __init__(self, ctx: WorkerContext, job_id: str):
        self.ctx = ctx
        self.job_id = job_id
        self._last: tuple[Stage, int, int] | None = None
        self._last_time = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        current = STAGE_OF.get(stage, Stage.DENOISE)
        now = time.monotonic()
        stage_changed = self._last is None or self._last[0] is not current
        if not (stage_changed or step >= total or now - self._last_time >= PROGRESS_MIN_INTERVAL_S):
            return
        self._last, self._last_time = (current, step, total), now
        self.ctx.db(repo.record_progress, self.job_id, current, step, total)
        self.ctx.publish(self.job_id, {"type": "progress", "stage": current.value, "step": step, "total": total})


class JobRunner:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx

    def run(self, job_id: str) -> str:
        ctx = self.ctx
        settings = ctx.settings
        job = ctx.db(repo.claim_job, job_id, ctx.worker_id, heartbeat_timeout_s=settings.heartbeat_timeout_s,
                     max_attempts=settings.max_attempts)
        if job is None:
            # Finished, running elsewhere with a fresh heartbeat, cancelled while queued, or deleted.
            log.info("duplicate delivery ignored", extra={"job_id": job_id})
            return "skipped"
        log.info("job claimed", extra={"job_id": job_id, "attempt": job.attempts, "worker_id": ctx.worker_id})
        ctx.publish(job_id, {"type": "state", "state": JobState.RUNNING.value, "attempt": job.attempts})
        kind = JobKind(job.kind)
        started = time.perf_counter()
        with Heartbeat(ctx, job_id) as beat:
            try:
                # Outside the model run's error handling: an unreachable store is retried, not FAILED.
                params, inputs = self._prepare(job, kind)
            except JobFailure as err:
                return self._settle_error(job_id, kind, err, beat)
            try:
                output = ctx.executor.run(kind, params, inputs, progress=ProgressReporter(ctx, job_id),
                                          should_cancel=lambda: self._should_cancel(job_id, beat))
            except Exception as err:  # the model's own errors, Cancelled, out of memory, or infrastructure
                return self._settle_error(job_id, kind, err, beat)
            if beat.lost.is_set():
                return self._lost(job_id)
            keys = self._store_outputs(job_id, output)
        timings = dict(output.timings)
        timings.setdefault("total", time.perf_counter() - started)
        text = output.thinking if kind is JobKind.TEXT_TO_IMAGE else output.text
        return self._terminal(job_id, JobState.SUCCEEDED, repo.finish_job, output_keys=keys, output_text=text,
                              timings=timings, seed=output.seed)

    # ------------------------------------------------------------------ steps

    def _prepare(self, job, kind: JobKind) -> tuple[Any, dict[str, bytes]]:
        try:
            params = validate_params(kind, job.params, max_prompt_chars=self.ctx.settings.max_prompt_chars)
        except InvalidArgument as err:  # stored params that no longer validate (e.g. a tightened limit)
            raise JobFailure("INVALID_ARGUMENT", err.message, err.field) from None
        inputs = {}
        for name, key in (job.input_keys or {}).items():
            try:
                inputs[name] = self.ctx.store.get(key)
            except ObjectNotFound:
                raise JobFailure("INPUT_MISSING", f"input object {key} is gone from the object store", name) from None
        return params, inputs

    def _should_cancel(self, job_id: str, beat: Heartbeat) -> bool:
        # Checked between steps by the model: a DB read per step is cheap next to a denoising forward.
        return beat.lost.is_set() or self.ctx.db(repo.is_cancel_requested, job_id)

    def _store_outputs(self, job_id: str, output: JobOutput) -> dict[str, str]:
        keys = {}
        for name, data in output.objects.items():
            key = result_key(job_id, name)  # deterministic: a retried job overwrites, never duplicates
            content_type = "image/png" if name.endswith(".png") else "application/octet-stream"
            self.ctx.store.put(key, data, content_type)
            keys[name.rsplit(".", 1)[0]] = key
        return keys

    # ------------------------------------------------------------------ endings

    def _settle_error(self, job_id: str, kind: JobKind, err: Exception, beat: Heartbeat) -> str:
        if beat.lost.is_set():
            return self._lost(job_id)
        if is_cancellation(err):
            return self._terminal(job_id, JobState.CANCELLED, repo.mark_cancelled)
        failure = classify_failure(err)
        if failure is None:
            # Infrastructure, not the job: leave it RUNNING; its heartbeat stops and the reaper re-sends it.
            log.exception("job interrupted by an infrastructure error", extra={"job_id": job_id})
            raise err
        field_name = failure.field
        if field_name and not field_name.startswith(FIELD_PREFIX[kind] + "."):
            field_name = f"{FIELD_PREFIX[kind]}.{field_name}"
        if failure.code == "INTERNAL":
            log.error("job failed", extra={"job_id": job_id}, exc_info=err)
        return self._terminal(job_id, JobState.FAILED, repo.fail_job, code=failure.code, message=failure.message,
                              field=field_name)

    def _terminal(self, job_id: str, state: JobState, write: Callable, **values) -> str:
        try:
            self.ctx.db(write, job_id, worker_id=self.ctx.worker_id, **values)
        except IllegalTransition:
            # Reaped and re-claimed elsewhere, or cancelled: that run owns the outcome now.
            return self._lost(job_id)
        log.info("job finished", extra={"job_id": job_id, "state": state.value})
        self.ctx.publish(job_id, {"type": "state", "state": state.value})
        return state.value

    def _lost(self, job_id: str) -> str:
        log.warning("job taken away from this worker; its outcome is left to the current owner",
                    extra={"job_id": job_id})
        return "lost"
