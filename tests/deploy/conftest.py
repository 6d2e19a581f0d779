"""Shared fixtures for the deployment checks: paths of the files under test, the loaded compose file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The commands the images run, as agreed between the service authors.
GATEWAY_COMMAND = ["python", "-m", "services.gateway"]
MIGRATE_COMMAND = ["python", "-m", "shared.db", "upgrade"]
REAPER_COMMAND = ["python", "-m", "workers.reaper"]
WORKER_COMMAND = ["celery", "-A", "workers.celery_app", "worker",
                  "--prefetch-multiplier=1", "--loglevel=INFO"]


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(REPO / ".env.example").items() if v is not None}


@pytest.fixture(scope="session")
def compose(compose_raw, env_example) -> dict:
    """The compose file as Compose sees it with the .env.example values."""
    from compose_interpolation import interpolate

    return interpolate(compose_raw, env_example)
