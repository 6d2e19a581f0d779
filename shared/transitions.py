"""The one statement that writes a job's state: every state change in the service is built here.

`move(sources, new, *where, **values)` is `UPDATE jobs SET state = new, … WHERE state IN sources AND …`, and
each `source → new` is checked against the state machine (shared.states) as the statement is built, so a
write the machine forbids fails in the code that asks for it, before it reaches the database. The extra WHERE
clauses are the caller's conditions on top of the state (the attempt's fence, a stale lease): the UPDATE's row
count says whether the job was still where the caller thought it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Update, update

from shared.db.models import Job
from shared.jobs import JobState
from shared.states import check_transition


def move(sources: Iterable[JobState | str], new: JobState | str, *where: Any, **values: Any) -> Update:
    """The UPDATE that moves a job from one of `sources` to `new`. A source equal to `new` keeps the state
    (a stale RUNNING job taken over by a new attempt): that is no transition, so it is not checked."""
    new = JobState(new)
    states = sorted({JobState(state) for state in sources}, key=lambda state: state.value)
    if not states:
        raise ValueError(f"a move to {new.value} needs at least one source state")
    for old in states:
        if old is not new:
            check_transition(old, new)
    return (update(Job).where(Job.state.in_([state.value for state in states]), *where)
            .values(state=new.value, **values).execution_options(synchronize_session=False))
