"""``llada-server up | down | status``: the embedded stack on one machine, nothing to install but Python packages.

`up` starts the gateway (`python -m services.gateway`), one Celery worker, the reaper, the webhook dispatcher
(`python -m services.webhooks`) and the HTTP front door (`python -m services.http`) as background processes, with
SQLite, a local object folder, kombu's filesystem broker and the trained toy checkpoint shipped in
models/toy-shapes (LLADA_MODEL_PATH for another), all under one data folder (`--data-dir`, default ./.llada)
together with the logs (`logs/`), the API key (`api-key`) and the pid file (`stack.json`). It returns once the
gateway's health check answers SERVING and the front door's /readyz answers. `down` stops them: SIGTERM, then
SIGKILL after `--timeout` seconds (the worker finishes its job within EMBEDDED_DRAIN_TIMEOUT_S or hands it back,
re-queued for the next `up`).
Production differs only in settings: LLADA_DATABASE_URL / LLADA_BROKER_URL / LLADA_OBJECT_STORE_URL …
set in the environment reach every process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from shared.files import replace_file
from shared.repository import new_api_key
from shared.settings import TOY_CHECKPOINT, Settings

PID_FILE = "stack.json"
API_KEY_FILE = "api-key"
LOG_DIR = "logs"
DEFAULT_START_TIMEOUT_S = 120.0
DEFAULT_STOP_TIMEOUT_S = 30.0
# The worker's drain on `llada-server down`: below the stop timeout, with room to hand the job back and exit.
EMBEDDED_DRAIN_TIMEOUT_S = DEFAULT_STOP_TIMEOUT_S - 10.0
# The embedded reaper runs often: it is what recovers a message the filesystem broker lost.
EMBEDDED_REAPER_INTERVAL_S = 2.0
EXIT_OK, EXIT_FAILED, EXIT_NOT_RUNNING = 0, 1, 3
# What the processes must agree on: where the data, the backends and the model are, and the addresses.
EMBEDDED_WORKER_EXECUTOR = "pipeline"  # Settings.worker_executor for the embedded stack; see start_stack
EXPORTED_SETTINGS = ("data_dir", "database_url", "broker_url", "object_store_url", "event_bus_url", "model_path",
                     "grpc_listen", "metrics_port", "http_listen", "http_metrics_port", "metrics_host",
                     "worker_metrics_port", "reaper_metrics_port", "webhook_metrics_port",
                     "s3_endpoint", "s3_access_key", "s3_secret_key", "s3_secure",
                     "s3_region", "s3_public_endpoint", "heartbeat_interval_s", "heartbeat_timeout_s",
                     "max_attempts", "edit_crop_base")


@dataclass
class StackInfo:
    data_dir: str
    grpc_address: str
    api_key: str
    http_url: str = ""
    metrics: dict[str, str] = field(default_factory=dict)  # process -> host:port of its /metrics
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, data_dir: Path) -> "StackInfo | None":
        path = data_dir / PID_FILE
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self) -> None:
        # It holds the API key: readable by this user only, from the moment it exists.
        replace_file(Path(self.data_dir) / PID_FILE, json.dumps(asdict(self), indent=2).encode())


# ---------------------------------------------------------------- processes


def is_alive(pid: int) -> bool:
    try:
        # Reap it if it is our own child (a demo that started the stack in-process), else a zombie lingers.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


# A word of each process's command line: a pid from an old pid file that now belongs to some other
# program (after a reboot) is never signalled.
COMMAND_MARKERS = {"gateway": "services.gateway", "worker": "workers.celery_app", "reaper": "workers.reaper",
                   "webhooks": "services.webhooks", "http": "services.http"}


def is_ours(name: str, pid: int) -> bool:
    """Alive and still running the stack's command (where /proc can tell; elsewhere alive is enough)."""
    if not is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True
    return COMMAND_MARKERS.get(name, "") in cmdline


def _signal_group(pid: int, signum: int) -> None:
    # Each process leads its own session (start_new_session): the group holds the worker's pool children.
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def stop_pids(pids: dict[str, int], timeout_s: float) -> dict[str, str]:
    """SIGTERM each process, wait up to `timeout_s`, SIGKILL the groups of what is left. Returns name → how."""
    how = {}
    for name, pid in pids.items():
        if is_ours(name, pid):
            # The leader only: Celery's parent then finishes the running job (warm shutdown) and stops
            # its pool child itself; a SIGTERM to the child directly would lose the job.
            os.kill(pid, signal.SIGTERM)
        else:
            how[name] = "not running"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(is_alive(pid) for n, pid in pids.items() if n not in how):
        time.sleep(0.1)
    for name, pid in pids.items():
        if name in how:
            continue
        if is_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            how[name] = "killed"
        else:
            how[name] = "stopped"
        _signal_group(pid, signal.SIGKILL)  # stragglers of the group (e.g. a pool child)
    ours = [pid for name, pid in pids.items() if how[name] != "not running"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_alive(pid) for pid in ours):
        time.sleep(0.05)
    return how


def process_commands(settings: Settings) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "gateway": [python, "-m", "services.gateway"],
        "worker": [python, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
                   # Pool and concurrency come from the app (workers.celery_app.worker_pool_for): with
                   # the in-process Pipeline, one prefork child running one job at a time.
                   "--prefetch-multiplier=1",
                   # One worker, no peers: skip the cluster chatter that only slows start-up.
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "--hostname", f"llada-embedded-{os.getpid()}@%h"],
        "reaper": [python, "-m", "workers.reaper", "--interval", str(EMBEDDED_REAPER_INTERVAL_S)],
        "webhooks": [python, "-m", "services.webhooks"],
        "http": [python, "-m", "services.http"],
    }


# Each process's metrics port setting. One the caller did not set gets a free port (0 set explicitly is off), so
# that two stacks on a machine, or a stack beside a deployment, never compete for the defaults.
METRICS_PORTS = {"gateway": "metrics_port", "http": "http_metrics_port", "worker": "worker_metrics_port",
                 "reaper": "reaper_metrics_port", "webhooks": "webhook_metrics_port"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def with_metrics_ports(settings: Settings) -> Settings:
    free = {name: free_port() for name in METRICS_PORTS.values() if name not in settings.model_fields_set}
    return settings.model_copy(update=free)


def metrics_addresses(settings: Settings) -> dict[str, str]:
    hosts = {"gateway": settings.grpc_listen.rpartition(":")[0], "http": settings.http_listen.rpartition(":")[0]}
    return {process: f"{hosts.get(process, settings.metrics_host)}:{getattr(settings, name)}"
            for process, name in METRICS_PORTS.items() if getattr(settings, name)}


# ---------------------------------------------------------------- preparation


def ensure_api_key(data_dir: Path) -> str:
    path = data_dir / API_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    key = new_api_key()
    replace_file(path, (key + "\n").encode())  # 0600 from the start, never half written
    return key


def ensure_model(settings: Settings, log=print) -> None:
    """The stack refuses to start without a checkpoint: the embedded default is the toy one in the repository."""
    path = Path(settings.model_path)
    if (path / "config.json").exists():
        return
    if path == TOY_CHECKPOINT:
        raise SystemExit(f"model_path: the toy checkpoint is missing from {path}; it ships with the repository "
                         "(regenerate it with: python -m workers.model.toyworld.train)")
    raise SystemExit(f"model_path: no checkpoint at {path} (config.json missing)")


def wait_serving(address: str, timeout_s: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("a process of the stack exited during start-up")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"the gateway at {address} did not answer SERVING within {timeout_s:.0f} s")


def wait_http_ready(url: str, timeout_s: float, alive=lambda: True) -> None:
    """Until the front door's /readyz answers 200 (it does once the gateway it calls answers SERVING)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("a process of the stack exited during start-up")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the HTTP front door at {url} was not ready within {timeout_s:.0f} s")


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- commands


def settings_for(data_dir: Path, grpc_listen: str | None = None, metrics_port: int | None = None,
                 http_listen: str | None = None, http_metrics_port: int | None = None) -> Settings:
    given = {"grpc_listen": grpc_listen, "metrics_port": metrics_port, "http_listen": http_listen,
             "http_metrics_port": http_metrics_port}
    return Settings(data_dir=data_dir, **{name: value for name, value in given.items() if value is not None})


def exported_settings(settings: Settings) -> dict[str, str]:
    """The LLADA_* variables that give every process of the stack these settings (EXPORTED_SETTINGS).
    A secret's str() is its mask: its value is exported (children need it; only this user reads their
    environment)."""
    def text(value) -> str:
        return value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    return {f"LLADA_{name.upper()}": text(getattr(settings, name)) for name in EXPORTED_SETTINGS
            if getattr(settings, name) is not None}


def running_stack(data_dir: Path) -> StackInfo | None:
    info = StackInfo.load(data_dir)
    if info is not None and all(is_ours(name, pid) for name, pid in info.pids.items()):
        return info
    return None


def start_stack(settings: Settings, *, timeout_s: float = DEFAULT_START_TIMEOUT_S, log=print,
                extra_env: dict[str, str] | None = None, prepare_model: bool = True) -> StackInfo:
    """Start the stack's processes (or return the stack already running in this data folder).

    `extra_env` reaches every process; `prepare_model=False` skips the checkpoint (an executor
    chosen through LLADA_WORKER_EXECUTOR that needs none). The worker runs the in-process Pipeline
    unless LLADA_WORKER_EXECUTOR (environment or `extra_env`) names another executor."""
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    existing = running_stack(data_dir)
    if existing is not None:
        return existing
    stale = StackInfo.load(data_dir)
    if stale is not None:  # a half-dead stack from before: stop what is left of it
        stop_pids(stale.pids, DEFAULT_STOP_TIMEOUT_S)
    api_key = ensure_api_key(data_dir)
    if prepare_model:
        ensure_model(settings, log)
    settings = with_metrics_ports(settings)
    from shared.db import upgrade

    upgrade(settings.database_url)
    logs_dir = data_dir / LOG_DIR
    logs_dir.mkdir(exist_ok=True)
    env = dict(os.environ)
    # The settings this stack was started with reach every process, whatever chose them (flags, code).
    env.update(exported_settings(settings))
    # The in-process Pipeline unless the environment names another executor: the embedded stack is one
    # small (often CPU-only) machine, where the Ray engine's start-up (a local cluster, three actors) costs
    # seconds and memory and buys nothing — there are no devices to spread the stages over.
    env.setdefault("LLADA_WORKER_EXECUTOR", EMBEDDED_WORKER_EXECUTOR)
    # `llada-server down` waits DEFAULT_STOP_TIMEOUT_S before SIGKILL: a job still running by then is handed
    # back (re-queued, run by the next `llada-server up`) instead of being cut off mid-attempt.
    env.setdefault("LLADA_DRAIN_TIMEOUT_S", str(EMBEDDED_DRAIN_TIMEOUT_S))
    env.update({"LLADA_DEFAULT_API_KEY": api_key, "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    info = StackInfo(data_dir=str(data_dir), grpc_address=settings.grpc_listen, api_key=api_key,
                     http_url=f"http://{settings.http_listen}", metrics=metrics_addresses(settings))
    project_root = Path(__file__).resolve().parent.parent
    try:
        for name, command in process_commands(settings).items():
            log_path = logs_dir / f"{name}.log"
            with open(log_path, "ab") as out:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, cwd=project_root, start_new_session=True)
            info.pids[name] = process.pid
            info.logs[name] = str(log_path)
            info.save()
        started, alive = time.monotonic(), lambda: all(is_alive(p) for p in info.pids.values())
        wait_serving(settings.grpc_listen, timeout_s, alive=alive)
        wait_http_ready(info.http_url, max(1.0, timeout_s - (time.monotonic() - started)), alive=alive)
    except (RuntimeError, TimeoutError, OSError) as err:
        tails = "\n".join(f"--- {name} ({path}):\n{_tail(path)}" for name, path in info.logs.items())
        stop_pids(info.pids, DEFAULT_STOP_TIMEOUT_S)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        raise RuntimeError(f"the embedded stack did not start: {err}\n{tails}") from None
    except BaseException:  # interrupted while starting: leave nothing running behind
        stop_pids(info.pids, DEFAULT_STOP_TIMEOUT_S)
        (data_dir / PID_FILE).unlink(missing_ok=True)
        raise
    return info


def stop_stack(data_dir: Path, *, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> dict[str, str]:
    info = StackInfo.load(data_dir)
    if info is None:
        return {}
    how = stop_pids(info.pids, timeout_s)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    return how


def stack_status(data_dir: Path) -> dict[str, str]:
    info = StackInfo.load(data_dir)
    if info is None:
        return {}
    status = {name: ("running" if is_ours(name, pid) else "exited") + f" (pid {pid})"
              for name, pid in info.pids.items()}
    try:
        wait_serving(info.grpc_address, 2.0)
        status["health"] = f"SERVING at {info.grpc_address}"
    except TimeoutError:
        status["health"] = f"not serving at {info.grpc_address}"
    for name, address in info.metrics.items():
        status[f"metrics {name}"] = f"http://{address}/metrics"
    if info.http_url:
        try:
            wait_http_ready(info.http_url, 2.0)
            status["http health"] = f"ready at {info.http_url}"
        except TimeoutError:
            status["http health"] = f"not ready at {info.http_url}"
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llada-server", description="the embedded llada-serve stack")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "start the gateway, a worker, the reaper, the webhook dispatcher and the HTTP "
                                   "front door"), ("down", "stop them"),
                            ("status", "show whether they run")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--data-dir", type=Path, default=None,
                         help="data folder (default: $LLADA_DATA_DIR or ./.llada)")
        if name == "up":
            sub.add_argument("--grpc-listen", help="gRPC address (default: $LLADA_GRPC_LISTEN or 127.0.0.1:50051)")
            sub.add_argument("--metrics-port", type=int, help="the gateway's Prometheus port, 0 = off (default: "
                             "$LLADA_METRICS_PORT, else a free port, as for every process's metrics)")
            sub.add_argument("--http-listen", help="HTTP front door address (default: $LLADA_HTTP_LISTEN or "
                             "127.0.0.1:8080)")
            sub.add_argument("--http-metrics-port", type=int, help="the front door's Prometheus port, 0 = off "
                             "(default: $LLADA_HTTP_METRICS_PORT, else a free port)")
            sub.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S,
                             help="seconds to wait for the gateway to serve")
        if name == "down":
            sub.add_argument("--timeout", type=float, default=DEFAULT_STOP_TIMEOUT_S,
                             help="seconds between SIGTERM and SIGKILL")
    args = parser.parse_args(argv)
    data_dir = args.data_dir if args.data_dir is not None else Settings().data_dir
    data_dir = data_dir.expanduser().resolve()

    if args.command == "up":
        settings = settings_for(data_dir, args.grpc_listen, args.metrics_port, args.http_listen, args.http_metrics_port)
        try:
            info = start_stack(settings, timeout_s=args.timeout, log=lambda m: print(m, file=sys.stderr))
        except RuntimeError as err:
            print(f"llada-server up: {err}", file=sys.stderr)
            return EXIT_FAILED
        print(f"llada-serve is up: gRPC at {info.grpc_address}, data and logs in {info.data_dir}")
        print(f"HTTP at {info.http_url}: the dashboard, the job API as JSON (/v1/jobs) and OpenAI-compatible "
              f"routes (base_url {info.http_url}/v1); API docs at {info.http_url}/docs")
        if info.metrics:
            listed = ", ".join(f"{name} http://{address}/metrics" for name, address in info.metrics.items())
            print(f"metrics: {listed}")
        print(f"export LLADA_SERVER={info.grpc_address}")
        print(f"export LLADA_API_KEY=$(cat {Path(info.data_dir) / API_KEY_FILE})")
        return EXIT_OK
    if args.command == "down":
        how = stop_stack(data_dir, timeout_s=args.timeout)
        if not how:
            print(f"llada-server down: no stack recorded in {data_dir}")
            return EXIT_OK
        print("llada-server down: " + ", ".join(f"{name} {state}" for name, state in how.items()))
        return EXIT_OK
    status = stack_status(data_dir)
    if not status:
        print(f"no stack recorded in {data_dir}")
        return EXIT_NOT_RUNNING
    for name, state in status.items():
        print(f"{name:8} {state}")
    running = all(state.startswith("running") for name, state in status.items()
                  if name not in ("health", "http health") and not name.startswith("metrics "))
    http_ready = status.get("http health", "ready").startswith("ready")
    return EXIT_OK if running and status["health"].startswith("SERVING") and http_ready else EXIT_NOT_RUNNING


if __name__ == "__main__":
    raise SystemExit(main())
