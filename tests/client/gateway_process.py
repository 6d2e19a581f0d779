"""Runs the gateway as its own process (``python -m services.gateway``) in embedded mode: SQLite, local
object store, embedded event bus and kombu's filesystem broker under a temporary data_dir, with the
embedded default API key. Tests play the worker through the repository on the same database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared import attempts
from shared import repository as repo
from shared.db import make_engine, session_factory
from shared.events import EmbeddedEventBus
from shared.objectstore import LocalObjectStore, result_key
from shared.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KEY = "llada_embedded-test-key-0123456789"
WORKER = "client-test-worker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GatewayProcess:
    process: subprocess.Popen
    address: str
    metrics_port: int
    api_key: str
    settings: Settings
    log_path: Path

    def __post_init__(self):
        self.sessions = session_factory(make_engine(self.settings.database_url))
        self.store = LocalObjectStore(self.settings.data_dir / "objects")
        self.events = EmbeddedEventBus(self.settings.data_dir / "events.db")

    def db(self, fn, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def complete(self, job_id: str, *, image: bytes | None = None, text: str | None = None,
                 fail: tuple[str, str] | None = None, seed: int | None = None) -> None:
        """Plays a worker: claim, two progress steps, outputs, terminal state, each announced on the bus."""
        attempt = self.db(attempts.claim_job, job_id, WORKER, heartbeat_timeout_s=60)
        self.events.publish(job_id, {"type": "state"})
        for step in (1, 2):
            self.db(attempts.record_progress, attempt, "denoise", step, 2)
            self.events.publish(job_id, {"type": "progress"})
            time.sleep(0.05)
        if fail:
            self.db(attempts.fail_job, attempt, code=fail[0], message=fail[1])
        else:
            keys = {}
            if image is not None:
                keys["image"] = result_key(job_id, 1, "image.png")
                self.store.put(keys["image"], image, "image/png")
            self.db(attempts.finish_job, attempt, output_keys=keys, output_text=text, seed=seed)
        self.events.publish(job_id, {"type": "state"})

    def complete_soon(self, job_id: str, **kwargs) -> threading.Thread:
        """``complete`` in a thread, while the test waits on the job."""
        thread = threading.Thread(target=self.complete, args=(job_id,), kwargs=kwargs, daemon=True)
        thread.start()
        return thread

    def queued_ids(self) -> set[str]:
        jobs, _ = self.db(repo.list_jobs, self.settings.default_tenant, state="QUEUED", page_size=500)
        return {job.id for job in jobs}

    def complete_next_queued(self, **kwargs) -> threading.Thread:
        """In a thread: waits for a QUEUED job of the default tenant that is not queued yet now (the one
        the test is about to submit), then completes it."""
        already = self.queued_ids()

        def run():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                new = self.queued_ids() - already
                if new:
                    self.complete(new.pop(), **kwargs)
                    return
                time.sleep(0.05)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def start_gateway_process(data_dir: Path, **env_overrides) -> GatewayProcess:
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "LLADA_DATA_DIR": str(data_dir), "LLADA_GRPC_LISTEN": f"127.0.0.1:{port}",
           "LLADA_METRICS_PORT": str(metrics_port), "LLADA_DEFAULT_API_KEY": DEFAULT_KEY, **env_overrides}
    for name in ("LLADA_DATABASE_URL", "LLADA_BROKER_URL", "LLADA_OBJECT_STORE_URL", "LLADA_EVENT_BUS_URL"):
        env.pop(name, None)  # the embedded defaults under data_dir
    log_path = data_dir / "gateway.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=REPO_ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited: {log_path.read_text()}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"gateway did not become healthy: {log_path.read_text()}")
            time.sleep(0.1)
    settings = Settings(data_dir=data_dir)
    return GatewayProcess(process, address, metrics_port, DEFAULT_KEY, settings, log_path)

