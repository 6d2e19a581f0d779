"""End-to-end fixtures: one tiny checkpoint for the whole run, made the way `llada up` makes it."""

from __future__ import annotations

import pytest

from shared.settings import Settings
from workers.embedded import ensure_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """`llada up`'s first-run step: the tiny checkpoint under the data folder (takes seconds, made once)."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("first-run"))
    ensure_model(settings, log=lambda message: None)
    return settings.model_path
