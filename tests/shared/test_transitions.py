"""Every write of a job's state is built by shared.transitions.move, which checks it against the state machine."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from shared.jobs import JobState
from shared.states import TRANSITIONS, IllegalTransition
from shared.transitions import move

ROOT = Path(__file__).resolve().parents[2]
PAIRS = list(itertools.product(JobState, repeat=2))


@pytest.mark.parametrize("old, new", [(o, n) for o, n in PAIRS if o is not n and n not in TRANSITIONS[o]])
def test_a_move_the_machine_forbids_fails_as_it_is_built(old, new):
    with pytest.raises(IllegalTransition, match=f"{old.value} → {new.value}"):
        move([old], new)


def test_one_forbidden_source_among_legal_ones_fails_the_whole_move():
    with pytest.raises(IllegalTransition, match="SUCCEEDED → QUEUED"):
        move([JobState.RUNNING, JobState.SUCCEEDED], JobState.QUEUED)


def test_a_legal_move_sets_the_state_only_where_the_job_is_in_a_source_state():
    sql = str(move([JobState.RUNNING], JobState.QUEUED, worker_id=None).compile())
    assert "SET state=" in sql and "WHERE jobs.state IN" in sql and "worker_id=" in sql


def test_a_takeover_keeps_the_state_and_is_no_transition():
    move([JobState.QUEUED, JobState.RUNNING], JobState.RUNNING)  # a stale RUNNING job claimed by a new attempt


def test_a_move_needs_a_source():
    with pytest.raises(ValueError, match="needs at least one source"):
        move([], JobState.CANCELLED)


def _state_writes_outside_transitions() -> list[str]:
    """`….values(state=…)` or `….values(**{"state": …})` anywhere in the service but shared/transitions.py."""
    found = []
    for folder in ("shared", "services", "workers", "client"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "shared" / "transitions.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
                    keys = {k.arg for k in node.keywords}
                    keys |= {key.value for k in node.keywords if k.arg is None and isinstance(k.value, ast.Dict)
                             for key in k.value.keys if isinstance(key, ast.Constant)}
                    if "state" in keys:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.reads_source
def test_no_state_write_bypasses_the_state_machine():
    assert _state_writes_outside_transitions() == []


@pytest.mark.reads_source
def test_every_state_write_is_a_shift_so_its_webhook_events_go_with_it():
    """`move` builds the statement; only `shift` runs it, writing the outbox in the same transaction."""
    callers = []
    for folder in ("shared", "services", "workers", "client", "server"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "move":
                    callers.append(path.relative_to(ROOT).as_posix())
    assert callers == ["shared/transitions.py"]
