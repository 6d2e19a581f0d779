"""Thinking-mode text-to-image end to end through gRPC with the worker on the Ray engine (issue 6): the
embedded stack started with LLADA_WORKER_EXECUTOR=engine, so the Celery worker starts a local Ray instance
(CPU custom resources) with one replica of the three actors; checked as a user would, then stopped with
no Ray process of this run left behind."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from client import LladaClient, stage_name, state_name
from tests.e2e.e2e_jobs import E2E_DECODER_STEPS, free_port, wait_watching
from shared.settings import Settings
from server import embedded

# Small enough for a 2-core machine: a 128² image at 2 steps a block after a 16-token thinking pass at
# 3 steps a block.
SIZE = 128
IMAGE_STEPS, BLOCK_LENGTH = 2, 8
THINKING_STEPS, THINKING_GEN_LENGTH = 3, 16
RAY_PROCESS_NAMES = ("raylet", "gcs_server")


def ray_processes_of(session_root: str) -> list[str]:
    """Command lines of Ray's node processes that run under this test's Ray temp folder."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines()[1:]
            if session_root in line and any(name in line for name in RAY_PROCESS_NAMES)]


def published_progress(settings: Settings, job_id: str) -> list[tuple[str, int, int]]:
    """(stage, step, total) of every progress event of the job, in publish order (the embedded bus's file)."""
    events_db = settings.event_bus_url[len("embedded://"):]
    with closing(sqlite3.connect(events_db)) as conn:
        rows = conn.execute("SELECT payload FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    events = [json.loads(payload) for (payload,) in rows]
    return [(e["stage"], e["step"], e["total"]) for e in events if e.get("type") == "progress"]


@pytest.fixture(scope="module")
def engine_stack(tmp_path_factory, tiny_checkpoint):
    # Ray's temp folder holds its unix sockets, whose paths must stay short (107 bytes): not under pytest's.
    ray_root = tempfile.mkdtemp(prefix="llada-ray-")
    settings = Settings(data_dir=tmp_path_factory.mktemp("engine-stack"), model_path=str(tiny_checkpoint),
                        grpc_listen=f"127.0.0.1:{free_port()}", metrics_port=0,
                        http_listen=f"127.0.0.1:{free_port()}", http_metrics_port=0)
    extra_env = {"LLADA_WORKER_EXECUTOR": "engine", "LLADA_ENGINE_REPLICAS": "1", "LLADA_ENGINE_MAX_INFLIGHT": "2",
                 "LLADA_ENGINE_MAX_BATCH": "2", "LLADA_ENGINE_DEVICE": "cpu", "RAY_TMPDIR": ray_root,
                 "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    info = embedded.start_stack(settings, log=lambda message: None, extra_env=extra_env)
    state = {"stopped": None}
    try:
        yield info, settings, ray_root, state
    finally:
        if state["stopped"] is None:
            embedded.stop_stack(settings.data_dir)
        shutil.rmtree(ray_root, ignore_errors=True)


def test_thinking_text_to_image_on_the_engine_over_grpc(engine_stack, tmp_path):
    info, settings, ray_root, state = engine_stack
    with LladaClient(info.grpc_address, api_key=info.api_key) as client:
        job = client.submit_text_to_image("a lighthouse at dusk", width=SIZE, height=SIZE, steps=IMAGE_STEPS,
                                          block_length=BLOCK_LENGTH, seed=11, mode="thinking",
                                          thinking_steps=THINKING_STEPS, thinking_gen_length=THINKING_GEN_LENGTH,
                                          decoder_steps=E2E_DECODER_STEPS)
        final, seen = wait_watching(client, job.id)
        assert state_name(final) == "SUCCEEDED", final.error
        assert final.attempts == 1
        [image_path] = client.download(final, tmp_path / "lighthouse.png")  # through the presigned URL
        assert Image.open(image_path).size == (SIZE, SIZE)
        assert final.outputs.HasField("seed") and final.outputs.seed == 11
        assert {"tokenize", "think", "denoise", "decode"} <= set(final.stage_seconds), final.stage_seconds

    # Both denoise phases reported progress to the end, each under its own stage: the thinking pass as
    # `think` (its 16-token pass), then the image as `denoise`, never interleaved. Read from the progress
    # events the worker published (a watch may coalesce a short phase into the next snapshot).
    progress = published_progress(settings, job.id)
    last_step: dict[str, tuple[int, int]] = {}  # stage → (highest step, total)
    for stage, step, total in progress:
        if stage in ("think", "denoise") and total:
            last_step[stage] = max(last_step.get(stage, (0, total)), (step, total))
    assert set(last_step) == {"think", "denoise"}, progress
    assert all(step == total for step, total in last_step.values()), progress
    stages = [stage for stage, _, _ in progress]
    assert stages.index("denoise") > max(i for i, stage in enumerate(stages) if stage == "think"), progress
    assert {"think", "denoise"} & {stage for _, stage, _, _ in seen}, seen  # the watch showed the progress

    # The thinking text is the job's output text as the worker recorded it (random weights: any text).
    from shared import repository as repo
    from shared.db import make_engine, session_factory

    db = make_engine(settings.database_url)
    try:
        with session_factory(db)() as session:
            recorded = repo.load_job(session, job.id).output_text
    finally:
        db.dispose()
    assert recorded is not None and final.outputs.thinking_text == recorded

    # The job really ran on the engine: the worker's Ray instance lives under this test's Ray folder.
    assert ray_processes_of(ray_root), "no raylet/gcs_server of this run while the stack is up"

    state["stopped"] = embedded.stop_stack(settings.data_dir)
    assert state["stopped"]["worker"] == "stopped", state["stopped"]  # a clean exit, not a SIGKILL
    deadline = time.monotonic() + 10
    while ray_processes_of(ray_root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes_of(ray_root), "Ray processes left behind after the stack stopped"
