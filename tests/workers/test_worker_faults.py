"""Fault tests against real Celery worker processes (loopback only, bounded): a killed worker, a job that
kills its worker every time, a lost broker message, duplicate deliveries, a restarted Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from tests.workers.worker_process import WorkerStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = WorkerStack(tmp_path_factory.mktemp("faults"))
    stack.start_worker()
    yield stack
    stack.close()


@pytest.mark.slow
def test_killed_worker_job_finishes_once_after_restart(stack):
    job_id = stack.submit("slow fox")
    stack.wait(lambda: stack.job(job_id).state == "RUNNING" and stack.job(job_id).progress_step >= 1,
               what="job running")

    stack.kill_worker()  # SIGKILL mid-job: the filesystem broker's message dies with it
    stack.start_worker()
    job = stack.wait_state(job_id, "SUCCEEDED", reap_every=0.3)

    assert job.attempts == 2
    assert stack.runs("slow fox") == 2  # started twice, finished once
    assert stack.results(job_id) == ["2/image.png"]  # one set of outputs, the winning attempt's


def test_duplicate_delivery_of_a_finished_job_changes_nothing(stack):
    job_id = stack.submit("fox")
    done = stack.wait_state(job_id, "SUCCEEDED")
    marker = stack.submit("marker after the duplicates", send=False)

    from shared.queue import enqueue_run_job
    enqueue_run_job(job_id, settings=stack.settings)
    enqueue_run_job(job_id, settings=stack.settings)
    enqueue_run_job(marker, settings=stack.settings)  # one worker, FIFO: done once the duplicates are
    stack.wait_state(marker, "SUCCEEDED")

    job = stack.job(job_id)
    assert (job.attempts, job.finished_at, job.output_keys) == (1, done.finished_at, done.output_keys)
    assert stack.runs("fox") == 1


@pytest.mark.slow
def test_job_that_kills_its_worker_every_time_fails_after_max_attempts(stack):
    job_id = stack.submit("die every time")

    job = stack.wait_state(job_id, "FAILED", timeout=45, reap_every=0.3)

    assert job.attempts == 3 and job.error_code == "WORKER_LOST"
    assert "3 attempts" in job.error_message
    assert stack.runs("die every time") == 3
    # The worker's parent survived its pool child dying three times and still takes jobs.
    ok = stack.submit("after the poison job")
    stack.wait_state(ok, "SUCCEEDED")


def test_lost_broker_message_is_recovered_by_the_reaper(stack):
    job_id = stack.submit("a message that never arrives", send=False)  # as if the broker dropped it
    # Young: the reaper leaves it for now (its message may still be on its way), so nothing runs it yet.
    assert stack.reaper.run_once().resent == [] and stack.job(job_id).state == "QUEUED"

    job = stack.wait_state(job_id, "SUCCEEDED", reap_every=0.3)

    assert job.attempts == 1 and stack.runs("a message that never arrives") == 1


@pytest.mark.slow
def test_sigterm_lets_the_running_job_finish_then_stops(stack):
    """What `llada down` and Kubernetes send first: a warm shutdown, not a lost job."""
    job_id = stack.submit("slow job during shutdown")
    stack.wait(lambda: stack.job(job_id).state == "RUNNING", what="job running")

    os.kill(stack.worker.pid, signal.SIGTERM)  # the leader only, as server.embedded.stop_pids does
    stack.worker.wait(30)

    job = stack.job(job_id)
    assert (job.state, job.attempts) == ("SUCCEEDED", 1)
    assert stack.results(job_id) == ["1/image.png"]


# ---------------------------------------------------------------- Redis restarted while jobs are queued


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_redis(port: int, folder) -> subprocess.Popen:
    # Our own server on a free loopback port, without persistence: a restart loses every message.
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port, socket_connect_timeout=0.2).ping()
            return process
        except redis.RedisError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("redis-server did not start")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_restart_while_jobs_are_queued_loses_none(tmp_path):
    port = _free_port()
    redis_server = _start_redis(port, tmp_path)
    stack = WorkerStack(tmp_path / "data", broker_url=f"redis://127.0.0.1:{port}/0")
    try:
        jobs = [stack.submit(f"queued {i}") for i in range(3)]
        redis_server.terminate()
        redis_server.wait(10)
        redis_server = _start_redis(port, tmp_path)  # empty: the three messages are gone
        stack.start_worker()

        for job_id in jobs:
            job = stack.wait_state(job_id, "SUCCEEDED", reap_every=0.3)
            assert job.attempts == 1
        assert [stack.runs(f"queued {i}") for i in range(3)] == [1, 1, 1]
    finally:
        stack.close()
        redis_server.kill()
        redis_server.wait(10)
