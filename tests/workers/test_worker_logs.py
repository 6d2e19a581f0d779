"""The worker's and the reaper's logs, as an operator's log pipeline reads them: one JSON object per line, and
every line about a job carries its job_id, attempt and tenant; LLADA_LOG_FORMAT=text gives plain lines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.workers.worker_process import ROOT, WorkerStack


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_a_workers_lines_about_a_job_carry_its_id_attempt_and_tenant(tmp_path, log_format):
    stack = WorkerStack(tmp_path, settings={"LLADA_LOG_FORMAT": log_format})
    try:
        stack.start_worker()
        job_id = stack.submit("logged")
        stack.wait_state(job_id, "SUCCEEDED")
        stack.wait(lambda: "job finished" in stack.log_path.read_text(), 10, what="the job's last log line")
    finally:
        stack.close()
    text = stack.log_path.read_text()
    lines = json_lines(text)
    about_the_job = [line for line in lines if line.get("job_id") == job_id]
    if log_format == "text":
        assert about_the_job == [] and "job claimed" in text and f"job_id={job_id}" in text and "tenant=t1" in text
        return
    assert {line["msg"] for line in about_the_job} >= {"job claimed", "job finished"}
    for line in about_the_job:
        assert (line["attempt"], line["tenant"], line["service"]) == (1, "t1", "worker"), line
    # Celery's own lines go the same way (its "ready" line among them), not as Celery's text format.
    assert any(line["logger"].startswith("celery") and " ready." in line["msg"] for line in lines)


@pytest.mark.slow
def test_the_reapers_lines_are_json(tmp_path):
    env = {"LLADA_DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-m", "shared.db", "upgrade"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    reaper = subprocess.Popen([sys.executable, "-m", "workers.reaper", "--interval", "0.2"], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        first = json.loads(reaper.stderr.readline())
    finally:
        reaper.terminate()
        reaper.wait(30)
    assert (first["msg"], first["service"], first["logger"], first["interval_s"]) == \
        ("reaper started", "reaper", "llada.reaper", 0.2)
