"""The chaos suite: one production-shaped stack for the module (chaos_stack.py), faults injected by the tests,
and one table of verdicts printed at the end of the run. Marked `chaos`: `pytest -m chaos` runs it alone,
`-m "not chaos"` leaves it out; the README's test command runs it with everything else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.chaos.chaos_stack import MOTO_SERVER, ChaosStack, Verdict
from tests.postgres_databases import POSTGRES_ADMIN_URL, skip_without_postgres

VERDICTS: list[Verdict] = []


def pytest_collection_modifyitems(items):
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().parent == here:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="session")
def chaos(tmp_path_factory):
    if shutil.which("redis-server") is None or not MOTO_SERVER.exists():
        pytest.skip("redis-server or moto_server not installed")
    skip_without_postgres()
    stack = ChaosStack(tmp_path_factory.mktemp("chaos"), POSTGRES_ADMIN_URL)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture
def record():
    """Keeps a trial's verdict for the table, then asserts it is clean."""
    def keep(verdict: Verdict) -> Verdict:
        VERDICTS.append(verdict)
        assert verdict.problems() == {}, verdict.problems()
        return verdict
    return keep


def pytest_terminal_summary(terminalreporter):
    if not VERDICTS:
        return
    write = terminalreporter.write_line
    write("")
    write("chaos: every job terminal exactly once, with its own attempt's output, nothing orphaned")
    header = (f"{'trial':<44} {'trials':>6} {'jobs':>5} {'lost':>5} {'doubled':>8} {'wrong output':>13} "
              f"{'orphaned':>9} {'stuck':>6}")
    write(header)
    write("-" * len(header))
    for v in VERDICTS:
        write(f"{v.trial:<44} {v.faults:>6} {v.jobs:>5} {len(v.lost):>5} {len(v.doubled):>8} {len(v.wrong):>13} "
              f"{len(v.orphaned):>9} {len(v.stuck):>6}")
