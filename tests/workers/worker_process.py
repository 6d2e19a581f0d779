"""A real Celery worker process for fault tests: `celery -A workers.celery_app worker`, configured through
LLADA_* variables, running ScriptedExecutorDouble (executor_doubles.py) instead of the model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.workers.executor_doubles import runs_logged
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.jobs import JobKind, validate_params
from shared.queue import enqueue_run_job
from shared.settings import Settings
from workers.reaper import reaper_from_settings

ROOT = Path(__file__).resolve().parents[2]
WORKER_READY_TIMEOUT_S = 60.0

# Fast beats: a worker that died is noticed within three seconds. (1.5 s left little room for beats held up
# on a loaded 2-core machine: the likely cause of two rare failures where a job that ran once counted 2 attempts.)
FAULT_SETTINGS = {
    "LLADA_HEARTBEAT_INTERVAL_S": "0.1",
    "LLADA_HEARTBEAT_TIMEOUT_S": "3.0",
    "LLADA_RESEND_QUEUED_AFTER_S": "1.0",
    "LLADA_MAX_ATTEMPTS": "3",
}


class WorkerStack:
    """One data folder; worker processes started and killed at will; the reaper and submissions in-process."""

    def __init__(self, data_dir: Path, *, broker_url: str | None = None, step_s: float = 0.05, steps: int = 5,
                 settings: dict[str, str] | None = None):
        """`settings`: more LLADA_* variables for the workers (and this stack's Settings), e.g. the engine
        executor and its checkpoint instead of the scripted double."""
        self.data_dir = data_dir
        self.markers = data_dir / "markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(FAULT_SETTINGS)
        self.env.update({
            "LLADA_DATA_DIR": str(data_dir),
            "LLADA_WORKER_EXECUTOR": "tests.workers.executor_doubles:ScriptedExecutorDouble",
            "LLADA_TEST_MARKERS": str(self.markers),
            "LLADA_TEST_STEPS": str(steps),
            "LLADA_TEST_STEP_S": str(step_s),
            "PYTHONPATH": os.pathsep.join([str(ROOT), self.env.get("PYTHONPATH", "")]),
        })
        if broker_url:
            self.env["LLADA_BROKER_URL"] = broker_url
        self.env.update(settings or {})
        chosen = set(FAULT_SETTINGS) | set(settings or {}) | {"LLADA_BROKER_URL"}
        settings_env = {k[len("LLADA_"):].lower(): v for k, v in self.env.items() if k in chosen}
        self.settings = Settings(data_dir=data_dir, **settings_env)
        upgrade(self.settings.database_url)
        self.engine = make_engine(self.settings.database_url)
        self.sessions = session_factory(self.engine)
        self.reaper = reaper_from_settings(self.settings)
        self.worker: subprocess.Popen | None = None
        self.log_path = data_dir / "worker.log"

    # ---- worker process
    def start_worker(self, *, wait_ready: bool = True) -> None:
        """A worker as deployed: the pool and concurrency follow from the executor (the scripted double and
        the Pipeline: one prefork child; the engine: threads)."""
        log = open(self.log_path, "ab")
        start = self.log_path.stat().st_size
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"fault-{time.time_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait_ready:
            self._wait_ready(start)

    def _wait_ready(self, start: int) -> None:
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            # Celery logs "celery@<host> ready." once it consumes.
            if b" ready." in self.log_path.read_bytes()[start:] or self.worker.poll() is not None:
                break
            time.sleep(0.05)
        if self.worker.poll() is not None or time.monotonic() >= deadline:
            raise AssertionError("worker did not start:\n" + self.log_path.read_text()[-3000:])

    def terminate_worker(self, timeout: float = 60.0) -> int:
        """SIGTERM to the worker's main process only (as Kubernetes and `llada down` send it); its exit code."""
        self.worker.send_signal(signal.SIGTERM)
        return self.worker.wait(timeout)

    def kill_worker(self) -> None:
        """SIGKILL the whole worker (parent and pool child), as a node or OOM kill would."""
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.wait(10)

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.poll() is None:
            os.killpg(self.worker.pid, signal.SIGKILL)
            self.worker.wait(10)

    def close(self) -> None:
        self.stop_worker()
        self.engine.dispose()

    # ---- jobs
    def submit(self, prompt: str, *, send: bool = True, **params) -> str:
        params = validate_params(JobKind.TEXT_TO_IMAGE, {"prompt": prompt, "width": 256, "height": 256, **params},
                                 max_prompt_chars=4000)
        with self.sessions() as s:
            job = repo.submit_job(s, tenant="t1", request_id=None, kind=JobKind.TEXT_TO_IMAGE,
                                     params=params.model_dump(mode="json"), input_keys={}, priority=0).job
        if send:
            enqueue_run_job(job.id, settings=self.settings)
        return job.id

    def job(self, job_id: str):
        with self.sessions() as s:
            return repo.load_job(s, job_id)

    def runs(self, prompt: str) -> int:
        return sum(1 for text, _ in runs_logged(self.markers) if text == prompt)

    def results(self, job_id: str) -> list[str]:
        """The job's result objects, as `<attempt>/<name>`."""
        folder = self.settings.data_dir / "objects" / "results" / job_id
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def wait(self, predicate, timeout: float = 30.0, *, reap_every: float | None = None, what: str = "condition"):
        """Polls `predicate`; with `reap_every`, runs a reaper pass that often meanwhile."""
        deadline = time.monotonic() + timeout
        next_reap = time.monotonic()
        while time.monotonic() < deadline:
            if predicate():
                return
            if reap_every is not None and time.monotonic() >= next_reap:
                self.reaper.run_once()
                next_reap = time.monotonic() + reap_every
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached in {timeout} s; worker log:\n" + self.log_path.read_text()[-3000:])

    def wait_state(self, job_id: str, state: str, timeout: float = 30.0, reap_every: float | None = None):
        self.wait(lambda: self.job(job_id).state == state, timeout, reap_every=reap_every,
                  what=f"job {job_id} {state}")
        return self.job(job_id)
