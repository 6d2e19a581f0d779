"""End-to-end fixtures: one tiny random checkpoint for the whole run (the layout and service-path tests; the
embedded default, the trained toy checkpoint, has its own tests)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    return str(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-checkpoint"), seed=0))
