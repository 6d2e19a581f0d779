"""`llada down` and `status` bookkeeping (the pid file and whose pids it names), and a `down` during a job."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.jobs import JobKind
from shared.queue import enqueue_run_job
from shared.settings import Settings
from tests.e2e.e2e_jobs import free_port
from server.embedded import (DEFAULT_STOP_TIMEOUT_S, EMBEDDED_DRAIN_TIMEOUT_S, StackInfo, ensure_api_key,
                              exported_settings, main, stack_status, start_stack, stop_stack)


def test_down_never_signals_a_pid_that_now_runs_another_program(tmp_path):
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:1", api_key="k",
                  pids={"gateway": stranger.pid}).save()

        how = stop_stack(tmp_path, timeout_s=1)

        assert how == {"gateway": "not running"}
        assert stranger.poll() is None  # still alive
        assert not (tmp_path / "stack.json").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_status_and_down_without_a_stack(tmp_path, capsys):
    assert stack_status(tmp_path) == {}
    assert main(["status", "--data-dir", str(tmp_path)]) == 3
    assert main(["down", "--data-dir", str(tmp_path)]) == 0
    assert "no stack recorded" in capsys.readouterr().out


def test_the_pid_file_and_the_key_file_are_private_and_written_whole(tmp_path):
    """Both hold the API key: 0600 from the start, whatever the umask, and replaced by a rename."""
    old_umask = os.umask(0)
    try:
        key = ensure_api_key(tmp_path)
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:1", api_key=key, pids={"gateway": 1}).save()
        StackInfo(data_dir=str(tmp_path), grpc_address="127.0.0.1:2", api_key=key).save()  # a rewrite
    finally:
        os.umask(old_umask)
    for name in ("api-key", "stack.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert ensure_api_key(tmp_path) == key and StackInfo.load(tmp_path).grpc_address == "127.0.0.1:2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api-key", "stack.json"]  # no temporary left


def test_secret_settings_reach_the_stack_as_their_values(tmp_path):
    settings = Settings(data_dir=tmp_path, s3_secret_key="minio-secret-value")
    assert "minio-secret-value" not in repr(settings)
    assert exported_settings(settings)["LLADA_S3_SECRET_KEY"] == "minio-secret-value"


@pytest.mark.slow
def test_llada_down_during_a_job_hands_it_back_to_the_next_up(tmp_path):
    """`down` sends SIGTERM, then SIGKILL after its timeout: the worker's drain ends first, so a long job is
    handed back (re-queued, not a lost attempt) and the next `up` runs it."""
    assert EMBEDDED_DRAIN_TIMEOUT_S < DEFAULT_STOP_TIMEOUT_S
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path, grpc_listen=f"127.0.0.1:{port}", metrics_port=0,
                        http_listen=f"127.0.0.1:{free_port()}", http_metrics_port=0)
    env = {"LLADA_WORKER_EXECUTOR": "tests.workers.executor_doubles:ScriptedExecutorDouble", "LLADA_TEST_STEPS": "300",
           "LLADA_TEST_STEP_S": "0.05", "LLADA_DRAIN_TIMEOUT_S": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    sessions = session_factory(engine)

    def job():
        with sessions() as s:
            return repo.load_job(s, job_id)

    def wait_for(predicate, what):
        deadline = time.monotonic() + 60
        while not predicate():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    try:
        with sessions() as s:
            job_id = repo.submit_job(s, tenant="default", request_id=None, kind=JobKind.TEXT_TO_IMAGE,
                                     params={"prompt": "long", "width": 256, "height": 256}, input_keys={}).job.id
        start_stack(settings, log=lambda message: None, extra_env=env, prepare_model=False)
        enqueue_run_job(job_id, settings=settings)
        wait_for(lambda: job().state == "RUNNING" and job().progress_step > 0, "the job running")

        stopped = stop_stack(tmp_path)

        assert stopped["worker"] == "stopped", stopped  # exited on SIGTERM, not killed
        assert (job().state, job().attempts, job().handed_back) == ("QUEUED", 1, 1)
        env["LLADA_TEST_STEPS"] = "3"
        start_stack(settings, log=lambda message: None, extra_env=env, prepare_model=False)
        wait_for(lambda: job().state == "SUCCEEDED", "the job finished by the next stack")
        assert (job().attempts, job().handed_back) == (2, 1)
    finally:
        stop_stack(tmp_path)
        engine.dispose()
