"""The job state machine: every legal transition, in one place (ARCHITECTURE §2–3).

QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED, with CANCELLING for a cancel requested while
running, RUNNING → QUEUED when the reaper returns a job whose worker stopped heart-beating, and
EXPIRED once retention has purged a finished job's results.
"""

from __future__ import annotations

from shared.jobs import JobState

Q, R, CG, S, F, C, E = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.CANCELLING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.EXPIRED,
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # FAILED straight from QUEUED: a job whose inputs vanished, or dead-lettered without a claim.
    Q: frozenset({R, C, F}),
    R: frozenset({S, F, CG, C, Q}),
    # A job may still finish (or fail) between the cancel request and the worker's next check.
    CG: frozenset({C, S, F}),
    S: frozenset({E}),
    F: frozenset({E}),
    C: frozenset({E}),
    E: frozenset(),
}

# Every job is created QUEUED; each later state change is a transition above (written by shared.transitions).
INITIAL_STATE = Q
TERMINAL_STATES = frozenset({S, F, C, E})
# States in which a worker owns the job and must keep heart-beating.
ACTIVE_STATES = frozenset({R, CG})


class IllegalTransition(Exception):
    def __init__(self, old: JobState, new: JobState):
        super().__init__(f"illegal job state transition {old.value} → {new.value}")


def check_transition(old: JobState | str, new: JobState | str) -> None:
    """Raise `IllegalTransition` unless `old → new` is allowed."""
    old, new = JobState(old), JobState(new)
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(old, new)


def sources_of(new: JobState | str) -> frozenset[JobState]:
    """Every state from which `new` may be entered (used for atomic conditional updates)."""
    new = JobState(new)
    return frozenset(old for old, targets in TRANSITIONS.items() if new in targets)


def is_terminal(state: JobState | str) -> bool:
    return JobState(state) in TERMINAL_STATES
