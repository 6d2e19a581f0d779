"""End to end through gRPC on the embedded backends: `llada-server up`, the three job kinds with the real tiny
model, progress seen by the watcher, outputs downloaded, a signed webhook from the stack's dispatcher, the openai
client over the HTTP front door, every process's metrics checked by promtool, `llada-server status`,
`llada-server down`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.e2e_jobs import E2E_EDIT_CROP_BASE, free_port, run_three_kinds

ROOT = Path(__file__).resolve().parents[2]
# The installed console script (client.cli:main), run with this interpreter's environment.
LLADA_SERVER = [str(Path(sys.executable).with_name("llada-server"))]


def llada_server(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*LLADA_SERVER, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_checkpoint):
    data_dir = tmp_path_factory.mktemp("embedded")
    env = {**os.environ, "LLADA_DATA_DIR": str(data_dir), "LLADA_MODEL_PATH": str(tiny_checkpoint),
           "LLADA_EDIT_CROP_BASE": E2E_EDIT_CROP_BASE,
           # The webhook test's receiver listens on loopback over http: allowed here, refused by default.
           "LLADA_WEBHOOK_ALLOW_HTTP": "true", "LLADA_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.0/8"]'}
    address, http_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    # Every process's metrics on a free port of the stack's choosing (checked by the last test).
    up = llada_server("up", "--grpc-listen", address, "--http-listen", http_address, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"gRPC at {address}" in up.stdout and f"HTTP at http://{http_address}" in up.stdout
    try:
        yield data_dir, address, (data_dir / "api-key").read_text().strip(), env | {"http": f"http://{http_address}"}
    finally:
        down = llada_server("down", env=env, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
        assert "worker stopped" in down.stdout or "worker killed" in down.stdout


def test_up_keeps_data_logs_key_and_pids_in_one_folder_and_serves(stack):
    data_dir, address, _, env = stack
    for path in ("jobs.db", "api-key", "stack.json", "objects", "broker/queue", "logs/gateway.log",
                 "logs/worker.log", "logs/reaper.log", "logs/webhooks.log", "logs/http.log"):
        assert (data_dir / path).exists(), path
    status = llada_server("status", env=env, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"SERVING at {address}" in status.stdout and f"ready at {env['http']}" in status.stdout
    for process in ("gateway", "worker", "reaper", "webhooks", "http"):
        assert re.search(rf"^{process}\s+running \(pid \d+\)$", status.stdout, re.M), (process, status.stdout)
    # The embedded stack runs the in-process Pipeline, one job per prefork child, not the Ray engine.
    assert "concurrency: 1 (prefork)" in (data_dir / "logs/worker.log").read_text()


def test_text_to_image_understanding_and_edit_over_grpc(stack, tmp_path):
    _, address, api_key, _ = stack
    run_three_kinds(address, api_key, tmp_path)


def test_cancel_a_running_job_over_grpc(stack):
    from client import LladaClient, stage_name, state_name

    _, address, api_key, _ = stack
    with LladaClient(address, api_key=api_key) as client:
        # 64 denoising steps (2 blocks × 32): long enough to be caught mid-way.
        job = client.submit_text_to_image("a slow red fox", width=256, height=256, steps=32, seed=3,
                                          decoder_steps=2)
        for snapshot in client.watch(job.id, timeout=120):
            if state_name(snapshot) == "RUNNING" and stage_name(snapshot) == "denoise" and snapshot.progress.step:
                break
        client.cancel(job.id)
        final = client.wait(job.id, timeout=60)

    assert state_name(final) == "CANCELLED" and final.cancel_requested
    assert final.progress.step < final.progress.total  # stopped mid-way, not run to the end
    assert not final.outputs.objects


def test_the_default_model_is_the_shipped_toy_checkpoint_and_a_missing_one_is_refused(tmp_path):
    from shared.settings import TOY_CHECKPOINT, TOY_EDIT_CROP_BASE, Settings
    from server.embedded import ensure_model

    default = Settings(data_dir=tmp_path)
    assert Path(default.model_path) == TOY_CHECKPOINT and default.edit_crop_base == TOY_EDIT_CROP_BASE
    ensure_model(default, log=lambda message: None)  # present: nothing to do
    assert Settings(data_dir=tmp_path, model_path=str(tmp_path)).edit_crop_base == 512  # another model: reference
    with pytest.raises(SystemExit, match="model_path: no checkpoint at"):
        ensure_model(Settings(data_dir=tmp_path, model_path=str(tmp_path / "absent")), log=lambda message: None)


def test_a_job_with_a_webhook_calls_it_signed_when_it_starts_and_ends(stack):
    from client import LladaClient, verify_webhook
    from tests.webhooks.receiver import LoopbackReceiver

    _, address, api_key, env = stack
    created = llada_server("webhook-secret", "create", "--tenant", "default", env=env, timeout=60)
    assert created.returncode == 0, created.stdout + created.stderr
    secret = next(word for word in created.stdout.split() if word.startswith("whsec_"))
    receiver = LoopbackReceiver()
    try:
        with LladaClient(address, api_key=api_key) as client:
            job = client.submit_text_to_image("a red circle", width=128, height=128, steps=2, decoder_steps=1,
                                              webhook={"url": receiver.url(), "events": ["started", "completed"]})
            final = client.wait(job.id, timeout=120)
        requests = receiver.wait_for(2, timeout_s=30)
        # Delivery order is not promised (README: a receiver orders by the body's state and times).
        bodies = {body["state"]: body for body in (verify_webhook(secret, r.headers, r.body) for r in requests)}
        assert sorted(bodies) == ["JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
        assert all(b["id"] == job.id for b in bodies.values())
        # presigned by the dispatcher
        assert bodies["JOB_STATE_SUCCEEDED"]["outputs"]["objects"][0]["url"].startswith("file://")
        with LladaClient(address, api_key=api_key) as client:
            deliveries = client.get(job.id).webhook_deliveries
        assert final.state and len(deliveries) == 2 and all(d.status_code == 204 for d in deliveries)
    finally:
        receiver.close()


def test_the_openai_client_over_the_stacks_http_front_door(stack):
    """The official openai package against `llada-server up`'s front door, the real model behind it."""
    import base64
    import io

    import openai
    from PIL import Image

    from client import LladaClient

    _, address, api_key, env = stack
    ai = openai.OpenAI(base_url=env["http"] + "/v1", api_key=api_key, max_retries=0, timeout=180)
    raw = ai.images.with_raw_response.generate(prompt="a red circle", size="128x128",
                                                extra_body={"steps": 2, "decoder_steps": 1, "seed": 4})
    png = base64.b64decode(raw.parse().data[0].b64_json)
    assert Image.open(io.BytesIO(png)).size == (128, 128)
    with LladaClient(address, api_key=api_key) as client:  # a normal job of the key's tenant, seen over gRPC too
        assert client.get(raw.headers["x-llada-job-id"]).params["seed"] == 4
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    chunks = list(ai.chat.completions.create(
        model="llada2.0-uni", stream=True, max_tokens=16, extra_body={"steps": 4, "block_length": 16},
        messages=[{"role": "user", "content": [{"type": "text", "text": "What is in the picture?"},
                                               {"type": "image_url", "image_url": {"url": uri}}]}]))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert isinstance("".join(c.choices[0].delta.content or "" for c in chunks), str)


PROMTOOL = shutil.which("promtool")


def scrape(address: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        return reply.read().decode()


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample in a scrape (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_every_process_serves_metrics_that_promtool_accepts_and_that_count_the_jobs(stack):
    """Runs last: after the jobs above (three kinds twice, a cancel, webhooks) and one failed job here."""
    from client import LladaClient, state_name

    data_dir, address, api_key, _ = stack
    with LladaClient(address, api_key=api_key) as client:
        png = next((data_dir / "objects").rglob("image.png")).read_bytes()
        failing = client.submit_understand(png, "what is it?", gen_length=8192)  # past the model's positions
        assert state_name(client.wait(failing.id, timeout=120)) == "FAILED"
    endpoints = json.loads((data_dir / "stack.json").read_text())["metrics"]
    assert set(endpoints) == {"gateway", "http", "worker", "reaper", "webhooks"}
    scrapes = {name: scrape(address) for name, address in endpoints.items()}
    for name, text in scrapes.items():
        assert "process_resident_memory_bytes" in text, name  # the process collectors, in every process
        if PROMTOOL:
            checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                                     timeout=30)
            assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
    worker = scrapes["worker"]
    assert sample(worker, "llada_jobs_finished_total", kind="TEXT_TO_IMAGE", state="SUCCEEDED") >= 2
    assert sample(worker, "llada_jobs_finished_total", kind="UNDERSTAND", state="FAILED") == 1
    assert sample(worker, "llada_jobs_finished_total", kind="TEXT_TO_IMAGE", state="CANCELLED") == 1
    assert sample(worker, "llada_job_cancels_honoured_total", kind="TEXT_TO_IMAGE") == 1
    assert sample(worker, "llada_job_queue_wait_seconds_count", kind="EDIT") >= 1
    assert sample(worker, "llada_job_stage_seconds_count", kind="EDIT", stage="decode") >= 1
    assert sample(worker, "llada_job_stage_seconds_count", kind="TEXT_TO_IMAGE", stage="upload") >= 1
    assert sample(worker, "llada_denoise_step_seconds_count", kind="UNDERSTAND", stage="denoise") >= 1
    assert sample(worker, "llada_job_attempt_seconds_count", kind="UNDERSTAND", outcome="succeeded") >= 1
    assert sample(worker, "llada_worker_ready") == 1
    assert sample(scrapes["reaper"], "llada_reaper_passes_total", outcome="ok") >= 1
    assert sample(scrapes["webhooks"], "llada_webhook_tries_total", event="completed", result="delivered") >= 1
    assert sample(scrapes["gateway"], "llada_jobs", state="FAILED") == 1
    assert sample(scrapes["http"], "llada_http_requests_total", route="/v1/images/generations", method="POST",
                  status="200") >= 1
