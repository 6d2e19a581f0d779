"""Drain, don't die — real Celery worker processes running the Ray engine on the tiny checkpoint, as deployed:
SIGTERM mid-job lets the job finish (one attempt) and the worker exit 0; a drain shorter than the job hands
it back at once to a second worker without counting it; an idle worker exits 0 at once; a worker whose
model will not load takes no job and exits EXIT_MODEL_UNAVAILABLE."""

from __future__ import annotations

import time

import pytest

from shared.health_file import judge, read_health_file
from tests.workers.worker_process import WorkerStack
from workers.lifecycle import EXIT_MODEL_UNAVAILABLE

# Short jobs on the tiny checkpoint (a few seconds each here): big enough to be mid-job when signalled.
JOB = dict(width=256, height=256, steps=8, block_length=32, decoder_steps=8, seed=1)
# Leases long enough that only a hand-back, never the reaper, could re-queue a job within a test.
ENGINE_SETTINGS = {"LLADA_WORKER_EXECUTOR": "engine", "LLADA_ENGINE_DEVICE": "cpu",
                   "LLADA_HEARTBEAT_INTERVAL_S": "1", "LLADA_HEARTBEAT_TIMEOUT_S": "120"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.model.tiny_checkpoint import make_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-checkpoint")
    make_tiny_checkpoint(folder, seed=0)
    return folder


def engine_stack(tmp_path, checkpoint, **settings) -> WorkerStack:
    return WorkerStack(tmp_path, settings={**ENGINE_SETTINGS, "LLADA_MODEL_PATH": str(checkpoint),
                                           "LLADA_WORKER_READY_FILE": str(tmp_path / "worker.ready"), **settings})


def ready(stack) -> bool:
    """What `llada-healthcheck worker` answers (services/healthcheck.py)."""
    return judge(read_health_file(stack.settings.worker_ready_file))[0]


def running(stack, job_id):
    job = stack.job(job_id)
    return job.state == "RUNNING" and job.stage == "denoise" and job.progress_step >= 1


@pytest.mark.slow
def test_sigterm_mid_job_finishes_the_job_once_and_exits_0(tmp_path, tiny_checkpoint):
    stack = engine_stack(tmp_path, tiny_checkpoint)
    try:
        stack.start_worker()
        job_id = stack.submit("a kite mid-job", **JOB)
        stack.wait(lambda: running(stack, job_id), timeout=60, what="job denoising")
        stack.wait(lambda: ready(stack), timeout=30, what="worker ready (model loaded, consuming)")

        assert stack.terminate_worker(timeout=90) == 0

        job = stack.job(job_id)
        assert (job.state, job.attempts, job.handed_back) == ("SUCCEEDED", 1, 0)
        assert not ready(stack) and not stack.settings.worker_ready_file.exists()
        assert stack.results(job_id) == ["1/image.png"]
    finally:
        stack.close()


@pytest.mark.slow
def test_a_drain_shorter_than_the_job_hands_it_back_to_the_next_worker(tmp_path, tiny_checkpoint):
    stack = engine_stack(tmp_path, tiny_checkpoint, LLADA_DRAIN_TIMEOUT_S="0.5")
    try:
        stack.start_worker()
        job_id = stack.submit("a kite handed back", **{**JOB, "steps": 32, "decoder_steps": 16})
        stack.wait(lambda: running(stack, job_id), timeout=60, what="job denoising")

        signalled = time.monotonic()
        assert stack.terminate_worker(timeout=90) == 0
        job = stack.job(job_id)
        # Re-queued by the hand-back itself, long before a 120 s lease could have run out.
        assert (job.state, job.attempts, job.handed_back, job.worker_id) == ("QUEUED", 1, 1, None)
        assert time.monotonic() - signalled < 60

        stack.start_worker()  # the next worker takes it from the queue: its message was re-sent
        job = stack.wait_state(job_id, "SUCCEEDED", timeout=120)
        assert (job.attempts, job.handed_back) == (2, 1)
        assert stack.results(job_id) == ["2/image.png"]

        # Idle now: SIGTERM stops it at once, with Ray, and exit code 0.
        signalled = time.monotonic()
        assert stack.terminate_worker(timeout=60) == 0
        assert time.monotonic() - signalled < 20
    finally:
        stack.close()


@pytest.mark.slow
def test_a_worker_whose_model_will_not_load_takes_no_job_and_exits_non_zero(tmp_path):
    stack = engine_stack(tmp_path, tmp_path / "no-such-checkpoint")
    try:
        job_id = stack.submit("never taken")
        stack.start_worker(wait_ready=False)
        assert stack.worker.wait(120) == EXIT_MODEL_UNAVAILABLE
        log = stack.log_path.read_text()
        assert "could not be loaded" in log and "no-such-checkpoint" in log
        job = stack.job(job_id)
        assert (job.state, job.attempts) == ("QUEUED", 0)
    finally:
        stack.close()


@pytest.mark.slow
def test_a_pipeline_worker_whose_model_will_not_load_stops_too(tmp_path):
    """The prefork pool: the model loads in the pool's child, and the parent stops with the child's verdict."""
    stack = WorkerStack(tmp_path, settings={"LLADA_WORKER_EXECUTOR": "pipeline",
                                            "LLADA_MODEL_PATH": str(tmp_path / "no-such-checkpoint")})
    try:
        job_id = stack.submit("never run")
        stack.start_worker(wait_ready=False)
        assert stack.worker.wait(120) == EXIT_MODEL_UNAVAILABLE
        job = stack.job(job_id)
        assert job.state == "QUEUED" and job.error_code is None  # handed back, or never taken: not FAILED
    finally:
        stack.close()
