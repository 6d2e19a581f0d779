"""Fixtures for the SDK and CLI tests: one gateway process (embedded mode) for the session."""

import pytest

from tests.client.gateway_process import start_gateway_process


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    gateway = start_gateway_process(tmp_path_factory.mktemp("embedded"))
    yield gateway
    gateway.stop()
