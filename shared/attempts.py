"""A worker's side of a job: claim it, hold its lease, write for it — only while the attempt still owns it.

Every claim starts a new **attempt**: `attempts + 1`, the claiming worker's id (process and job thread)
and a fresh heartbeat. `claim_job` returns that attempt's token (`Attempt`: job id, attempt number, worker
id) — a fencing token (ARCHITECTURE §3). Heartbeats, progress, cancel checks and the terminal write are
conditional on it in SQL, so an attempt that was paused past its lease (GC, SIGSTOP, a partition) and
re-claimed by another worker, or whose job was cancelled away or deleted, can write nothing: its
heartbeat and progress return False, `check_attempt` answers FENCED, its terminal write raises
`AttemptFenced`. Attempt numbers only grow, so a fenced attempt never owns the job again.

Leases are judged by the database's clock (`db_now`), never a process's: a worker whose clock jumps
cannot keep a dead lease alive, nor a reaper with a fast clock take a live one.

Functions take a `Session` and end their transaction before returning, like shared.repository's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from shared.db.clock import db_now
from shared.db.models import Job
from shared.db.types import utcnow
from shared.jobs import JobState, Stage
from shared.repository import load_job
from shared.states import ACTIVE_STATES
from shared.transitions import shift
from shared.webhooks.outbox import PROGRESS, record_progress_event

# Error code of a job whose worker stopped responding on each of its attempts (dead letter).
WORKER_LOST = "WORKER_LOST"

_ACTIVE = [st.value for st in ACTIVE_STATES]


@dataclass(frozen=True)
class Attempt:
    """The fencing token of one claim. Equal tokens are the same attempt; `job` is the row as claimed."""

    job_id: str
    number: int
    worker_id: str
    job: Job = field(compare=False, repr=False)


class AttemptFenced(Exception):
    """The attempt no longer owns its job: re-queued, re-claimed by a later attempt, finished, or deleted."""

    def __init__(self, attempt: Attempt, reason: str):
        super().__init__(f"attempt {attempt.number} of job {attempt.job_id} is fenced off: {reason}")
        self.attempt = attempt
        self.reason = reason


class AttemptStatus(enum.Enum):
    OWNED = "owned"                        # keep going
    CANCEL_REQUESTED = "cancel_requested"  # stop and write CANCELLED
    FENCED = "fenced"                      # stop and write nothing


def _stale(heartbeat_timeout_s: float):
    """The lease ran out: no heartbeat for longer than the timeout, by the database's clock."""
    return or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < db_now(heartbeat_timeout_s))


def _is_attempt(attempt: Attempt):
    """The row is the attempt's job and the attempt still holds it (its state is for the caller to add)."""
    return and_(Job.id == attempt.job_id, Job.attempts == attempt.number, Job.worker_id == attempt.worker_id)


def _owned_by(attempt: Attempt):
    return and_(_is_attempt(attempt), Job.state.in_(_ACTIVE))


# ---------------------------------------------------------------- claiming


def claim_job(s: Session, job_id: str, worker_id: str, *, heartbeat_timeout_s: float,
              max_attempts: int | None = None) -> Attempt | None:
    """Start a new attempt of `job_id` for `worker_id`: QUEUED → RUNNING, attempts + 1, fresh heartbeat.

    A job RUNNING with a stale heartbeat (its worker died and the broker re-delivered) is taken over the
    same way, which fences its old attempt off. Returns None for a duplicate delivery: the job is
    finished, running with a fresh heartbeat, being claimed by someone else right now, or deleted. With
    `max_attempts`, a stale job that has used them all is failed instead (dead letter) and None returned.
    """
    claimable = or_(Job.state == JobState.QUEUED.value,
                    and_(Job.state == JobState.RUNNING.value, _stale(heartbeat_timeout_s)))
    if s.get_bind().dialect.name == "postgresql":
        # Lock the row, skipping it if another claimer holds it: that claimer wins.
        locked = s.scalar(select(Job.id).where(Job.id == job_id, claimable).with_for_update(skip_locked=True))
        if locked is None:
            s.rollback()
            return _settle_unclaimable(s, job_id, heartbeat_timeout_s)
    job = s.get(Job, job_id, populate_existing=True)
    if job is None:
        s.rollback()
        return None
    if max_attempts is not None and job.state == JobState.RUNNING.value and failed_attempts(job) >= max_attempts:
        s.rollback()
        _dead_letter(s, job_id, heartbeat_timeout_s, failed_attempts(job))
        return None
    # The conditional UPDATE is the atomic step on SQLite (and a no-op guard on Postgres, row locked).
    claimed = shift(s, [JobState.QUEUED, JobState.RUNNING], JobState.RUNNING, Job.id == job_id, claimable,
                    attempts=Job.attempts + 1, worker_id=worker_id, heartbeat_at=db_now(),
                    started_at=utcnow(), stage=None, progress_step=0, progress_total=0, output_text=None)
    if not claimed:
        s.rollback()
        return _settle_unclaimable(s, job_id, heartbeat_timeout_s)
    s.commit()
    job = load_job(s, job_id)
    return Attempt(job.id, job.attempts, worker_id, job)


def failed_attempts(job: Job) -> int:
    """Attempts that count against `max_attempts`: those not handed back by a worker that stopped for a
    routine reason (a scale-down's drain)."""
    return job.attempts - (job.handed_back or 0)


def _settle_unclaimable(s: Session, job_id: str, heartbeat_timeout_s: float) -> None:
    """A job we could not claim: if a cancel is pending and its worker is gone, finish the cancel."""
    shift(s, [JobState.CANCELLING], JobState.CANCELLED, Job.id == job_id, _stale(heartbeat_timeout_s),
          finished_at=utcnow(), output_text=None)
    s.commit()
    return None


def _dead_letter(s: Session, job_id: str, heartbeat_timeout_s: float, attempts: int) -> bool:
    failed = shift(s, [JobState.RUNNING], JobState.FAILED, Job.id == job_id, _stale(heartbeat_timeout_s),
                   finished_at=utcnow(), error_code=WORKER_LOST, output_text=None,
                   error_message=f"the worker stopped responding on each of {attempts} attempts; giving up")
    s.commit()
    return bool(failed)


# ---------------------------------------------------------------- while running


def heartbeat(s: Session, attempt: Attempt) -> bool:
    """Renew the attempt's lease. False: the attempt is fenced off (stop, write nothing more)."""
    return _write_if_owned(s, attempt, {"heartbeat_at": db_now()})


def record_progress(s: Session, attempt: Attempt, stage: Stage | str, step: int, total: int) -> bool:
    """Store the attempt's stage and step / total (also renews the lease), with its webhook's progress event
    in the same transaction. False: fenced off."""
    stored = s.execute(update(Job).where(_owned_by(attempt))
                       .values(stage=Stage(stage).value, progress_step=step, progress_total=total,
                               heartbeat_at=db_now())
                       .returning(Job.webhook_url, Job.webhook_events)
                       .execution_options(synchronize_session=False)).first()
    if stored is not None and stored.webhook_url and PROGRESS in (stored.webhook_events or ()):
        record_progress_event(s, attempt.job_id)
    s.commit()
    return stored is not None


def record_answer(s: Session, attempt: Attempt, text: str) -> bool:
    """Store an UNDERSTAND attempt's answer so far as the job's output text (it grows as blocks settle; a new
    attempt, a failure or a cancel clears it, the finish replaces it with the answer). Renews the lease too.
    False: fenced off."""
    return _write_if_owned(s, attempt, {"output_text": text, "heartbeat_at": db_now()})


def _write_if_owned(s: Session, attempt: Attempt, values: dict[str, Any]) -> bool:
    result = s.execute(update(Job).where(_owned_by(attempt)).values(**values)
                       .execution_options(synchronize_session=False))
    s.commit()
    return result.rowcount == 1


def check_attempt(s: Session, attempt: Attempt) -> AttemptStatus:
    """What the attempt should do at its next step: go on, stop for a cancel, or stop because it is fenced."""
    row = s.execute(select(Job.state, Job.attempts, Job.worker_id).where(Job.id == attempt.job_id)).one_or_none()
    s.commit()  # end the read transaction so the next check sees new writes
    if row is None or (row.attempts, row.worker_id) != (attempt.number, attempt.worker_id) \
            or row.state not in _ACTIVE:
        return AttemptStatus.FENCED
    # A cancel of a running job moves it to CANCELLING (shared.repository.request_cancel); that is the request.
    if row.state == JobState.CANCELLING.value:
        return AttemptStatus.CANCEL_REQUESTED
    return AttemptStatus.OWNED


# ---------------------------------------------------------------- endings (write the outputs first)


def finish_job(s: Session, attempt: Attempt, *, output_keys: dict[str, str], output_text: str | None = None,
               timings: dict[str, float] | None = None, seed: int | None = None) -> Job:
    """RUNNING/CANCELLING → SUCCEEDED, naming the attempt's output objects in the same fenced statement.

    `seed`: the seed the job ran with (kept as `result_seed`, so a drawn seed can be replayed).
    Raises AttemptFenced when the attempt no longer owns the job: its outputs are then nobody's.
    """
    values: dict[str, Any] = {"output_keys": output_keys, "output_text": output_text, "result_seed": seed}
    return _end(s, attempt, JobState.SUCCEEDED, values, timings)


def fail_job(s: Session, attempt: Attempt, *, code: str, message: str, field: str | None = None,
             timings: dict[str, float] | None = None) -> Job:
    """RUNNING/CANCELLING → FAILED with an error code, message and optional request field."""
    return _end(s, attempt, JobState.FAILED, {"error_code": code, "error_message": message, "error_field": field,
                                              "output_text": None}, timings)


def mark_cancelled(s: Session, attempt: Attempt) -> Job:
    """RUNNING/CANCELLING → CANCELLED: the attempt acknowledges a cancel request."""
    return _end(s, attempt, JobState.CANCELLED, {"cancel_requested": True, "output_text": None}, None)


def _end(s: Session, attempt: Attempt, new: JobState, values: dict[str, Any],
         timings: dict[str, float] | None) -> Job:
    values = {**values, "finished_at": utcnow()}
    if timings is not None:
        values["timings"] = timings
    if not shift(s, ACTIVE_STATES, new, _is_attempt(attempt), **values):
        s.rollback()
        landed = _already_ended(s, attempt, new, values)
        if landed is not None:
            return landed
        raise AttemptFenced(attempt, _why_fenced(s, attempt))
    s.commit()
    return load_job(s, attempt.job_id)


def _already_ended(s: Session, attempt: Attempt, new: JobState, values: dict[str, Any]) -> Job | None:
    """The job, if this very attempt already ended it this way: a retry after a commit whose answer was lost
    with the connection (it committed, the worker saw an error). Without this the retry would find the job
    "finished by someone" and the worker would delete the outputs its own committed row names."""
    job = s.get(Job, attempt.job_id, populate_existing=True)
    s.commit()
    if job is None or (job.attempts, job.worker_id, job.state) != (attempt.number, attempt.worker_id, new.value):
        return None
    if "output_keys" in values and job.output_keys != values["output_keys"]:
        return None
    return job


def _why_fenced(s: Session, attempt: Attempt) -> str:
    job = s.get(Job, attempt.job_id, populate_existing=True)
    s.commit()
    if job is None:
        return "the job was deleted"
    if job.attempts != attempt.number:
        return f"attempt {job.attempts} has claimed it since"
    return f"the job is {job.state} now"


def hand_back(s: Session, attempt: Attempt) -> Job:
    """Return the job unfinished, at once: the attempt's worker is shutting down (its drain ran out) or
    cannot run jobs. RUNNING → QUEUED, not counted against `max_attempts` (`handed_back + 1`); a job with a
    cancel pending is CANCELLED instead, as nobody runs it now. Re-send the job's message after this.
    Raises AttemptFenced when the attempt no longer owns the job (then there is nothing to hand back)."""
    if not shift(s, [JobState.CANCELLING], JobState.CANCELLED, _is_attempt(attempt), finished_at=utcnow(),
                 output_text=None):
        requeued = shift(s, [JobState.RUNNING], JobState.QUEUED, _is_attempt(attempt),
                         handed_back=Job.handed_back + 1, worker_id=None, heartbeat_at=None, stage=None,
                         progress_step=0, progress_total=0, output_text=None)
        if not requeued:
            s.rollback()
            raise AttemptFenced(attempt, _why_fenced(s, attempt))
    s.commit()
    return load_job(s, attempt.job_id)


# ---------------------------------------------------------------- the reaper's side


def reap_stale(s: Session, *, heartbeat_timeout_s: float, max_attempts: int) -> tuple[list[str], list[str]]:
    """Deal with running jobs whose lease ran out (no heartbeat for `heartbeat_timeout_s`).

    Returns `(requeued_ids, dead_ids)`: requeued jobs are QUEUED again (re-send them to the broker);
    dead ones were finished here — FAILED after `max_attempts` attempts (dead letter), or CANCELLED
    when a cancel was pending. Either way the stale attempt is fenced off.
    """
    stale = _stale(heartbeat_timeout_s)
    candidates = s.execute(select(Job.id, Job.state, Job.attempts - Job.handed_back)
                           .where(Job.state.in_(_ACTIVE), stale)).all()
    s.commit()
    requeued: list[str] = []
    dead: list[str] = []
    for job_id, state, failed in candidates:
        if state == JobState.CANCELLING.value:
            cancelled = shift(s, [JobState.CANCELLING], JobState.CANCELLED, Job.id == job_id, stale,
                              finished_at=utcnow(), output_text=None)
            s.commit()
            if cancelled:
                dead.append(job_id)
        elif failed >= max_attempts:
            if _dead_letter(s, job_id, heartbeat_timeout_s, failed):
                dead.append(job_id)
        else:
            # Conditional on the same staleness, so a heartbeat that lands meanwhile keeps the job.
            moved = shift(s, [JobState.RUNNING], JobState.QUEUED, Job.id == job_id, stale, worker_id=None,
                          heartbeat_at=None, stage=None, progress_step=0, progress_total=0, output_text=None)
            s.commit()
            if moved:
                requeued.append(job_id)
    return requeued, dead
