import itertools

import pytest

from shared.jobs import JobState
from shared.states import IllegalTransition, check_transition, is_terminal, sources_of

LEGAL = {
    ("QUEUED", "RUNNING"), ("QUEUED", "CANCELLED"), ("QUEUED", "FAILED"),
    ("RUNNING", "SUCCEEDED"), ("RUNNING", "FAILED"), ("RUNNING", "CANCELLING"),
    ("RUNNING", "CANCELLED"), ("RUNNING", "QUEUED"),
    ("CANCELLING", "CANCELLED"), ("CANCELLING", "SUCCEEDED"), ("CANCELLING", "FAILED"),
    ("SUCCEEDED", "EXPIRED"), ("FAILED", "EXPIRED"), ("CANCELLED", "EXPIRED"),
}


@pytest.mark.parametrize("old, new", list(itertools.product([s.value for s in JobState], repeat=2)))
def test_exactly_the_documented_transitions_are_legal(old, new):
    if (old, new) in LEGAL:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransition, match=f"{old} → {new}"):
            check_transition(old, new)


def test_terminal_states_never_run_again():
    for state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED):
        assert is_terminal(state)
        for new in (JobState.QUEUED, JobState.RUNNING, JobState.CANCELLING):  # asked of the code, not of LEGAL
            with pytest.raises(IllegalTransition):
                check_transition(state, new)
    assert not is_terminal("CANCELLING")


def test_sources_of_running_is_only_queued():
    assert sources_of(JobState.RUNNING) == {JobState.QUEUED}
