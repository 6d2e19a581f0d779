"""End-to-end fixtures: one tiny checkpoint for the whole run (making it takes seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("e2e-model") / "tiny-checkpoint", seed=0)
