"""Worker fixtures (helpers in worker_harness.py: test modules import them from there, not from conftest)."""

from __future__ import annotations

import pytest

from tests.workers.worker_harness import WorkerHarness, make_harness


@pytest.fixture
def harness(tmp_path) -> WorkerHarness:
    harness, engine = make_harness(tmp_path)
    yield harness
    engine.dispose()
