"""The one statement that writes a job's state: every state change in the service is built here.

`shift(s, sources, new, *where, **values)` runs `UPDATE jobs SET state = new, … WHERE state IN sources AND …`
in the caller's transaction and returns the ids it moved: whether the job was still where the caller thought
it was. Each `source → new` is checked against the state machine (shared.states) as the statement is built
(`move`), so a write the machine forbids fails in the code that asks for it, before it reaches the database.
The extra WHERE clauses are the caller's conditions on top of the state (the attempt's fence, a stale lease).
The moved jobs' webhook events are written in the same transaction (shared.webhooks.outbox): they commit
with the change or not at all; so are their counts as finished jobs (shared.job_metrics).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Update, update
from sqlalchemy.orm import Session

from shared.db.models import Job
from shared.job_metrics import note_finished
from shared.jobs import JobState
from shared.states import check_transition
from shared.webhooks.outbox import record_state_events


def shift(s: Session, sources: Iterable[JobState | str], new: JobState | str, *where: Any, **values: Any) -> list[str]:
    """Move the jobs (one, as every caller words its WHERE) and record their webhook events; the caller
    commits. Returns the ids moved: empty when the job was no longer in a source state or failed `where`."""
    new = JobState(new)
    moved = s.execute(move(sources, new, *where, **values)
                      .returning(Job.id, Job.kind, Job.webhook_url, Job.webhook_events)).all()
    record_state_events(s, moved, new)
    note_finished(s, [row.kind for row in moved], new)
    return [row.id for row in moved]


def move(sources: Iterable[JobState | str], new: JobState | str, *where: Any, **values: Any) -> Update:
    """The UPDATE that moves a job from one of `sources` to `new`. A source equal to `new` keeps the state
    (a stale RUNNING job taken over by a new attempt): that is no transition, so it is not checked."""
    new = JobState(new)
    states = sorted({JobState(state) for state in sources})  # a str enum: sorted by value
    if not states:
        raise ValueError(f"a move to {new.value} needs at least one source state")
    for old in states:
        if old is not new:
            check_transition(old, new)
    return (update(Job).where(Job.state.in_([state.value for state in states]), *where)
            .values(state=new.value, **values).execution_options(synchronize_session=False))
