"""`llada-healthcheck gateway|worker|reaper|webhooks` (services/healthcheck.py), each role's container health
check, run as the containers run it: a subprocess reading the LLADA_* environment. The gateway check against a
real gRPC server on loopback, plain and TLS; the worker, reaper and webhooks checks against the files their
processes keep."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from concurrent import futures

import grpc
import pytest
from tests.deploy.deploy_paths import HEALTH_FILE_VARIABLES, REPO
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def run_check(tmp_path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLADA_")}
    env.update({"PYTHONPATH": str(REPO), "LLADA_DATA_DIR": str(tmp_path / "data"), **settings})
    return subprocess.run([sys.executable, "-m", "services.healthcheck", *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env=env)


def self_signed_certificate(tmp_path) -> tuple[str, str]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=gateway.example", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=DNS:gateway.example"], check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


@contextlib.contextmanager
def serving_health(tls: tuple[str, str] | None = None):
    """A gRPC server on 127.0.0.1 with the health service (TLS with the (cert, key) files): (port, servicer)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if tls:
        cert, key = tls
        credentials = grpc.ssl_server_credentials([(open(key, "rb").read(), open(cert, "rb").read())])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None)


def test_gateway_is_asked_where_its_setting_says_it_listens(tmp_path):
    with serving_health() as (port, servicer):
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        # A wildcard listen address is asked on loopback (where this server alone listens).
        result = run_check(tmp_path, "gateway", LLADA_GRPC_LISTEN=f"0.0.0.0:{port}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"127.0.0.1:{port}: SERVING" in result.stdout


def test_gateway_not_serving_is_unhealthy(tmp_path):
    with serving_health() as (port, servicer):
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        result = run_check(tmp_path, "gateway", LLADA_GRPC_LISTEN=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "unhealthy" in result.stdout and "NOT_SERVING" in result.stdout


def test_gateway_on_another_port_than_the_setting_is_unhealthy_within_the_timeout(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = run_check(tmp_path, "gateway", "--timeout", "1", LLADA_GRPC_LISTEN=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout or "DEADLINE_EXCEEDED" in result.stdout
    assert time.monotonic() - started < 30


def test_gateway_with_tls_configured_is_checked_over_tls(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    with serving_health((cert, key)) as (port, servicer):
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        tls = dict(LLADA_GRPC_LISTEN=f"0.0.0.0:{port}", LLADA_TLS_CERT_FILE=cert, LLADA_TLS_KEY_FILE=key)
        # The certificate names the public host, not 127.0.0.1: without that name the handshake fails.
        refused = run_check(tmp_path, "gateway", "--timeout", "2", **tls)
        result = run_check(tmp_path, "gateway", "--server-name", "gateway.example", **tls)
    assert refused.returncode == 1
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(TLS): SERVING" in result.stdout


def write_record(path, *, age_s: float = 0.0, stale_after_s: float = 30.0, ok: bool = True, error=None):
    path.write_text(json.dumps({"written_at": time.time() - age_s, "stale_after_s": stale_after_s, "ok": ok,
                                "error": error}))


@pytest.mark.parametrize("role,variable", sorted(HEALTH_FILE_VARIABLES.items()))
def test_file_checks_judge_presence_age_and_outcome(tmp_path, role, variable):
    path = tmp_path / f"{role}.health"
    unset = run_check(tmp_path, role)
    assert unset.returncode == 1 and f"{variable} is not set" in unset.stdout

    missing = run_check(tmp_path, role, **{variable: str(path)})
    assert missing.returncode == 1 and "no health file" in missing.stdout

    write_record(path)
    fresh = run_check(tmp_path, role, **{variable: str(path)})
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert f"{role} healthy" in fresh.stdout

    write_record(path, age_s=45, stale_after_s=30)  # its process hung or died without removing it
    stale = run_check(tmp_path, role, **{variable: str(path)})
    assert stale.returncode == 1 and "more than 30 s" in stale.stdout

    write_record(path, ok=False, error="last pass failed: OperationalError: connection refused")
    failed = run_check(tmp_path, role, **{variable: str(path)})
    assert failed.returncode == 1 and "connection refused" in failed.stdout


def test_the_webhooks_check_reads_the_pass_file_the_dispatcher_writes(tmp_path):
    """The dispatcher's own loop (services.webhooks.dispatcher.run_forever) against a real database: healthy
    while its passes succeed, unhealthy naming the error once they fail, unhealthy once it has stopped."""
    from services.webhooks.addresses import AddressPolicy
    from services.webhooks.dispatcher import Dispatcher, run_forever
    from services.webhooks.sender import WebhookSender
    from shared.db import make_engine, session_factory, upgrade
    from shared.settings import Settings

    pass_file = tmp_path / "run" / "webhooks.pass"
    settings = Settings(data_dir=tmp_path / "data", webhook_pass_file=pass_file, webhook_poll_interval_s=0.05)
    upgrade(settings.database_url)
    dispatcher = Dispatcher(settings, session_factory(make_engine(settings.database_url)),
                            WebhookSender(AddressPolicy(), timeout_s=1.0))
    check = {"LLADA_WEBHOOK_PASS_FILE": str(pass_file)}
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 1.0})
    thread.start()
    try:
        _wait_for(pass_file.exists)
        healthy = run_check(tmp_path, "webhooks", **check)
        assert healthy.returncode == 0, healthy.stdout + healthy.stderr
        assert "webhooks healthy" in healthy.stdout

        # The database is gone: each pass fails, and says so.
        dispatcher.sessions = session_factory(make_engine(f"sqlite:///{tmp_path}/no-such-folder/jobs.db"))
        _wait_for(lambda: '"ok": false' in pass_file.read_text())
        failed = run_check(tmp_path, "webhooks", **check)
        assert failed.returncode == 1 and "last pass failed: OperationalError" in failed.stdout
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    stopped = run_check(tmp_path, "webhooks", **check)
    assert stopped.returncode == 1 and "no health file" in stopped.stdout


def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_the_check_is_an_installed_command_of_the_project():
    """Installed by pip as a console script, with the interpreter's shebang, in every image: never a bare
    .py file copied in (which fails with `exec format error` when run as a command)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["llada-healthcheck"] == "services.healthcheck:main"
    assert not list((REPO / "docker").glob("*.py"))
