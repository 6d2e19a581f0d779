"""`run_job(job_id)`: the Celery task body that finishes a job exactly once (ARCHITECTURE §3).

claim a new attempt in the database → load inputs → run the executor with progress and cancellation
checks between steps, heart-beating meanwhile → write outputs under the attempt's own keys → write the
terminal state, naming those keys, in one statement fenced by the attempt's token (shared.attempts).

An attempt that finds itself fenced off (reaped while paused and re-claimed, cancelled away, its job
deleted) stops at its next step, removes what it wrote and leaves the outcome to the job's current owner.
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

from opentelemetry.trace import SpanKind
from sqlalchemy.orm import sessionmaker

from shared import attempts
from shared import repository as repo
from shared.attempts import Attempt, AttemptFenced
from shared.db import make_engine, session_factory
from shared.db.errors import is_transient_db_error
from shared.jobs import PARAMS_FIELD, InvalidArgument, JobKind, JobState, validate_params
from shared.objectstore import ObjectNotFound, result_key
from shared.settings import Settings, get_settings
from shared.tracing import context_of, trace_stages, tracer
from workers import metrics
from workers.executor import Executor, JobFailure, JobOutput, ModelUnavailable, classify_failure, is_cancellation
from workers.executor_choice import executor_from_settings, jobs_at_once
from workers.lease import AnswerReporter, Lease, ProgressReporter
from workers.lifecycle import Lifecycle, lifecycle

log = logging.getLogger("llada.worker")

# A terminal write that meets a database outage is tried again, this long apart at most, for as long as
# the attempt's lease lasts (the heartbeat keeps renewing it once the database is back).
TERMINAL_RETRY_MAX_S = 1.0


def new_worker_id() -> str:
    # A random suffix: a restarted container may get the same host name and pid.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def attempt_worker_id(worker_id: str) -> str:
    """The process's id plus the job thread's: with a thread pool, each running attempt has its own."""
    return f"{worker_id}/{threading.get_native_id()}"


@dataclass
class WorkerContext:
    """What a worker process talks to; built once per process."""

    settings: Settings
    sessions: sessionmaker
    store: Any   # shared.objectstore.ObjectStore
    events: Any  # shared.events.EventBus
    executor: Executor
    worker_id: str = field(default_factory=new_worker_id)
    # Drain and model-failure state, shared with the pool's parent (workers.lifecycle).
    lifecycle: Lifecycle = field(default_factory=lambda: lifecycle)
    # Sends run_job for a job handed back (default: shared.queue.enqueue_run_job on the settings' broker).
    enqueue: Callable[[str, int], None] | None = None

    def db(self, fn: Callable, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def send(self, job_id: str, priority: int) -> None:
        """Put the job's message back on the queue; if that fails, the reaper re-sends queued jobs."""
        try:
            if self.enqueue is not None:
                self.enqueue(job_id, priority)
            else:
                from shared.queue import enqueue_run_job

                enqueue_run_job(job_id, priority=priority, settings=self.settings)
        except Exception:
            log.warning("could not re-send a handed-back job; the reaper will", extra={"job_id": job_id},
                        exc_info=True)

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
        # Each running job uses the database from its own thread and its heartbeat thread.
        sessions=session_factory(make_engine(settings.database_url, threads=2 * jobs_at_once(settings))),
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


def release_worker_context() -> None:
    """Close this process's executor, if it built one (the engine stops its actors and Ray)."""
    global _context
    with _context_lock:
        ctx, _context = (_context, None) if _context_pid == os.getpid() else (None, _context)
    close = getattr(ctx.executor, "close", None) if ctx is not None else None
    if close is not None:
        try:
            close()
        except Exception:
            log.warning("could not release the model cleanly", exc_info=True)


def warm_up() -> bool:
    """Build this process's context and load the model now. False when the model cannot be loaded: the
    reason is logged and the process's lifecycle marked, so the worker stops instead of taking jobs."""
    ctx = worker_context()
    load = getattr(ctx.executor, "load", None)
    if load is None:
        return True
    try:
        load()
    except ModelUnavailable as err:
        log.error("the model could not be loaded; this worker takes no jobs", extra={"reason": str(err)})
        ctx.lifecycle.model_failed()
        return False
    return True


def run_job(job_id: str) -> str:
    """Celery task `llada.run_job`: run the job once; returns what happened (for logs)."""
    return JobRunner(worker_context()).run(job_id)


class AttemptLost(Exception):
    """Raised inside the runner when its attempt turned out to be fenced off; ends the run quietly."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class JobRunner:
    def __init__(self, ctx: WorkerContext):
        self.ctx = ctx

    def run(self, job_id: str) -> str:
        ctx = self.ctx
        settings = ctx.settings
        if ctx.lifecycle.draining() or ctx.lifecycle.exit_code():
            # A message taken just before the drain began: this worker starts nothing new.
            job = ctx.db(repo.jobs_by_id, [job_id]).get(job_id)
            if job is not None:
                log.info("worker stopping; job message sent back unstarted", extra={"job_id": job_id})
                ctx.send(job_id, job.priority)
            return "sent back"
        attempt = ctx.db(attempts.claim_job, job_id, attempt_worker_id(ctx.worker_id),
                         heartbeat_timeout_s=settings.heartbeat_timeout_s, max_attempts=settings.max_attempts)
        if attempt is None:
            # Finished, running elsewhere with a fresh heartbeat, cancelled while queued, or deleted.
            log.info("duplicate delivery ignored", extra={"job_id": job_id})
            return "skipped"
        # Each attempt continues the trace its submit began (stored with the job: shared.tracing).
        with tracer().start_as_current_span(
                "llada.run_job", context=context_of(attempt.job.trace_context), kind=SpanKind.CONSUMER,
                attributes={"llada.job_id": job_id, "llada.kind": attempt.job.kind,
                            "llada.attempt": attempt.number}) as span:
            outcome = self._run_claimed(attempt)
            span.set_attribute("llada.outcome", outcome)
            return outcome

    def _run_claimed(self, attempt: Attempt) -> str:
        ctx, job_id = self.ctx, attempt.job_id
        metrics.attempt_started(attempt.job.kind, attempt.number, attempt.job.created_at, attempt.job.started_at)
        started, outcome = time.perf_counter(), "interrupted"  # an infrastructure error leaves it to the reaper
        with Lease(ctx, attempt) as lease:
            log.info("job claimed", extra=lease.log_fields())
            ctx.publish(job_id, {"type": "state", "state": JobState.RUNNING.value, "attempt": attempt.number})
            written: list[str] = []
            try:
                outcome = self._run_attempt(lease, written)
            except AttemptLost as lost:
                outcome = self._lost(lease, written, lost.reason)
            finally:
                metrics.attempt_ended(attempt.job.kind, outcome, time.perf_counter() - started)
            return outcome

    def _run_attempt(self, lease: Lease, written: list[str]) -> str:
        attempt = lease.attempt
        kind = JobKind(attempt.job.kind)
        started = time.perf_counter()
        try:
            # Outside the model run's error handling: an unreachable store is retried, not FAILED.
            params, inputs = self._prepare(attempt, kind)
        except JobFailure as err:
            return self._settle_error(lease, kind, err)
        run_started_ns = time.time_ns()
        try:
            answer = AnswerReporter(self.ctx, lease) if kind is JobKind.UNDERSTAND else None
            output = self.ctx.executor.run(kind, params, inputs, progress=ProgressReporter(self.ctx, lease),
                                           should_cancel=lease.should_cancel, answer=answer)
        except Exception as err:  # the model's own errors, Cancelled, out of memory, or infrastructure
            return self._settle_error(lease, kind, err)
        trace_stages(run_started_ns, output.timings)
        uploading = time.perf_counter()
        with tracer().start_as_current_span("llada.upload", attributes={"llada.objects": len(output.objects)}):
            keys = self._store_outputs(lease, output, written)
        timings = dict(output.timings)
        uploaded = {"upload": time.perf_counter() - uploading} if output.objects else {}
        timings.setdefault("total", time.perf_counter() - started)
        text = output.thinking if kind is JobKind.TEXT_TO_IMAGE else output.text
        ended = self._terminal(lease, JobState.SUCCEEDED, attempts.finish_job, output_keys=keys, output_text=text,
                               timings=timings, seed=output.seed)
        metrics.stages(kind.value, {**timings, **uploaded})
        return ended

    # ------------------------------------------------------------------ steps

    def _prepare(self, attempt: Attempt, kind: JobKind) -> tuple[Any, dict[str, bytes]]:
        job = attempt.job
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

    def _store_outputs(self, lease: Lease, output: JobOutput, written: list[str]) -> dict[str, str]:
        """Uploads under the attempt's own keys, stopping at once if the attempt is fenced meanwhile.

        A put that lands late (the worker froze mid-upload) lands under a key that no row names: the
        winning attempt's objects are never replaced, and the reaper's sweep removes the stray one."""
        attempt = lease.attempt
        keys = {}
        for name, data in output.objects.items():
            if lease.fenced.is_set():
                raise AttemptLost("fenced before its outputs were stored")
            key = result_key(attempt.job_id, attempt.number, name)
            content_type = "image/png" if name.endswith(".png") else "application/octet-stream"
            written.append(key)
            self.ctx.store.put(key, data, content_type)
            keys[name.rsplit(".", 1)[0]] = key
        return keys

    # ------------------------------------------------------------------ endings

    def _settle_error(self, lease: Lease, kind: JobKind, err: Exception) -> str:
        if lease.fenced.is_set():
            raise AttemptLost("fenced while running")
        if isinstance(err, ModelUnavailable):
            log.error("the model could not be loaded; handing the job back and stopping this worker",
                      extra=lease.log_fields(reason=str(err)))
            self.ctx.lifecycle.model_failed()
            return self._hand_back(lease, "the worker could not load its model")
        if lease.handing_back:
            return self._hand_back(lease, lease.handing_back)
        if is_cancellation(err):
            return self._terminal(lease, JobState.CANCELLED, attempts.mark_cancelled)
        failure = classify_failure(err)
        if failure is None:
            # Infrastructure, not the job: leave it RUNNING; its heartbeat stops and the reaper re-sends it.
            log.exception("job interrupted by an infrastructure error", extra=lease.log_fields())
            raise err
        field_name = failure.field
        # Run-time errors name fields the way the gateway does: under the kind's params message.
        if field_name and not field_name.startswith(PARAMS_FIELD[kind] + "."):
            field_name = f"{PARAMS_FIELD[kind]}.{field_name}"
        if failure.code == "INTERNAL":
            log.error("job failed", extra=lease.log_fields(), exc_info=err)
        return self._terminal(lease, JobState.FAILED, attempts.fail_job, code=failure.code, message=failure.message,
                              field=field_name)

    def _terminal(self, lease: Lease, state: JobState, write: Callable, **values) -> str:
        """The fenced terminal write, tried again through a database outage while the lease holds."""
        with tracer().start_as_current_span("llada.finish", attributes={"llada.state": state.value}):
            return self._terminal_write(lease, state, write, **values)

    def _terminal_write(self, lease: Lease, state: JobState, write: Callable, **values) -> str:
        deadline = time.monotonic() + self.ctx.settings.heartbeat_timeout_s
        pause = 0.05
        while True:
            try:
                self.ctx.db(write, lease.attempt, **values)
                break
            except AttemptFenced as err:
                raise AttemptLost(err.reason) from None
            except Exception as err:
                if not is_transient_db_error(err) or time.monotonic() + pause > deadline or lease.fenced.is_set():
                    raise
                log.warning("terminal write failed; retrying", extra=lease.log_fields(error=type(err).__name__))
                lease.fenced.wait(pause)
                pause = min(pause * 2, TERMINAL_RETRY_MAX_S)
        log.info("job finished", extra=lease.log_fields(state=state.value))
        self.ctx.publish(lease.attempt.job_id, {"type": "state", "state": state.value})
        return state.value

    def _hand_back(self, lease: Lease, reason: str) -> str:
        """Return the job unfinished and re-send it at once (not a failed attempt), saying why in its events."""
        try:
            job = self.ctx.db(attempts.hand_back, lease.attempt)
        except AttemptFenced as err:
            raise AttemptLost(err.reason) from None
        log.info("job handed back", extra=lease.log_fields(reason=reason, state=job.state))
        self.ctx.publish(job.id, {"type": "state", "state": job.state, "handed_back": True, "reason": reason})
        if job.state == JobState.QUEUED.value:
            self.ctx.send(job.id, job.priority)
        return "handed back"

    def _lost(self, lease: Lease, written: list[str], reason: str) -> str:
        """A fenced-off attempt: remove what it wrote (nobody's outputs now) and leave quietly."""
        for key in written:
            try:
                self.ctx.store.delete(key)
            except Exception:  # the reaper's sweep removes objects no row names
                log.warning("could not remove a fenced attempt's object", extra=lease.log_fields(key=key),
                            exc_info=True)
        log.info("attempt fenced off; its outcome is left to the job's current owner",
                 extra=lease.log_fields(reason=reason, removed=len(written)))
        return "lost"
