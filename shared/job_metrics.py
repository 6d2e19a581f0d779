"""`llada_jobs_finished_total{kind,state}`, counted where a job ends, in whichever process ends it: a worker (SUCCEEDED,
FAILED, CANCELLED), the gateway (a queued job cancelled), the reaper (a dead letter, a pending cancel finished).
Each process exports its own count (shared.metrics_server.process_registry registers it): their sum is every job
that ended. Counted when the transaction that ended the job commits (shared.transitions.shift notes it in the
session), so a rolled-back change counts nothing."""

from __future__ import annotations

from prometheus_client import Counter
from sqlalchemy import event
from sqlalchemy.orm import Session

from shared.jobs import JobState

JOBS_FINISHED = Counter("llada_jobs_finished", "Jobs that ended, by kind and terminal state, counted by the process "
                        "that ended them (sum over processes for every job)", ["kind", "state"], registry=None)
# An end of a job's run; EXPIRED (a finished job's results purged) is not another end.
ENDINGS = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
_PENDING = "llada.jobs_finished"


def note_finished(s: Session, kinds: list[str], state: JobState) -> None:
    """Called by shift() for the jobs its statement moved into `state`; counted at commit."""
    if state in ENDINGS and kinds:
        s.info.setdefault(_PENDING, []).extend((kind, state.value) for kind in kinds)


@event.listens_for(Session, "after_commit")
def _count(session: Session) -> None:
    for kind, state in session.info.pop(_PENDING, ()):
        JOBS_FINISHED.labels(kind, state).inc()


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
