"""docker/grpc_healthcheck.py, the gateway image's HEALTHCHECK, against a real gRPC server on loopback."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from deploy_paths import REPO
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

SCRIPT = REPO / "docker" / "grpc_healthcheck.py"


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(grace=None)


def _check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_serving_server_is_healthy(health_server):
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _check(target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SERVING" in result.stdout


def test_not_serving_server_is_unhealthy(health_server):
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    result = _check(target)
    assert result.returncode == 1
    assert "NOT_SERVING" in result.stdout


def test_unknown_service_is_unhealthy(health_server):
    target, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    result = _check(target, "--service", "no.such.Service")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stdout


def test_no_server_is_unhealthy_within_the_timeout():
    # Bind and release a port so that nothing listens on it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _check(f"127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout
