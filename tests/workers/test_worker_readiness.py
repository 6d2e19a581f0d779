"""A real Celery worker process says it is ready (LLADA_WORKER_READY_FILE, read by `llada-healthcheck worker`)
only while it consumes with its model loaded: not before, not once it drains, never when its model fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.workers.worker_process import ROOT, WorkerStack
from workers.lifecycle import EXIT_MODEL_UNAVAILABLE


def check_worker(stack: WorkerStack) -> subprocess.CompletedProcess:
    """The container's health check, with the worker's environment."""
    return subprocess.run([sys.executable, "-m", "services.healthcheck", "worker"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=stack.env)


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")


@pytest.mark.slow
def test_ready_while_consuming_and_unready_as_soon_as_the_drain_begins(tmp_path):
    ready_file = tmp_path / "run" / "worker.ready"
    ready_file.parent.mkdir()
    ready_file.write_text('{"written_at": 9e99, "stale_after_s": 30, "ok": true}')  # a predecessor's file
    stack = WorkerStack(tmp_path, steps=12, step_s=0.5, settings={"LLADA_WORKER_READY_FILE": str(ready_file)})
    try:
        stack.start_worker()
        wait_until(lambda: check_worker(stack).returncode == 0, 60, "the worker's health check passing")
        assert json.loads(ready_file.read_text())["written_at"] < time.time() + 1, "the predecessor's file"

        job_id = stack.submit("a long job")
        stack.wait(lambda: stack.job(job_id).state == "RUNNING" and stack.job(job_id).progress_step >= 1,
                   timeout=30, what="job running")
        stack.worker.send_signal(15)
        wait_until(lambda: not ready_file.exists(), 10, "the readiness file removed")
        unready = check_worker(stack)
        assert unready.returncode == 1 and "no health file" in unready.stdout
        assert stack.job(job_id).state == "RUNNING", "the drain was still under way"

        assert stack.worker.wait(60) == 0
        assert stack.job(job_id).state == "SUCCEEDED"
        assert not ready_file.exists()
    finally:
        stack.close()


@pytest.mark.slow
def test_a_worker_whose_model_will_not_load_is_never_ready(tmp_path):
    ready_file = tmp_path / "worker.ready"
    stack = WorkerStack(tmp_path, settings={"LLADA_WORKER_EXECUTOR": "pipeline",
                                            "LLADA_MODEL_PATH": str(tmp_path / "no-such-checkpoint"),
                                            "LLADA_WORKER_READY_FILE": str(ready_file)})
    try:
        stack.start_worker(wait_ready=False)
        seen_ready = False
        deadline = time.monotonic() + 120
        while stack.worker.poll() is None and time.monotonic() < deadline:
            seen_ready |= ready_file.exists()
            time.sleep(0.05)
        assert stack.worker.wait(10) == EXIT_MODEL_UNAVAILABLE
        assert not seen_ready and not ready_file.exists()
    finally:
        stack.close()
