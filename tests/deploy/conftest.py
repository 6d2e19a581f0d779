"""Shared fixtures for the deployment checks: paths of the files under test, the loaded compose file."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.deploy_paths import REPO


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
    from tests.deploy.compose_interpolation import interpolate

    return interpolate(compose_raw, env_example)
