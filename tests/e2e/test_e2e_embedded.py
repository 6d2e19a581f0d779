"""End to end through gRPC on the embedded backends: `llada up`, the three job kinds with the real tiny
model, progress seen by the watcher, outputs downloaded, `llada status`, `llada down`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from client import LladaClient, stage_name, state_name

ROOT = Path(__file__).resolve().parents[2]
# The installed console script (client.cli:main), run with this interpreter's environment.
LLADA = [str(Path(sys.executable).with_name("llada"))]
JOB_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def llada(*args: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*LLADA, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("embedded")
    # MODEL_SPEC §3.5's 512-base edit crop costs minutes on a CPU; the 128 base edits an 8×8 grid.
    env = {**os.environ, "LLADA_DATA_DIR": str(data_dir), "LLADA_EDIT_CROP_BASE": "128"}
    address = f"127.0.0.1:{free_port()}"
    up = llada("up", "--grpc-listen", address, "--metrics-port", "0", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"gRPC at {address}" in up.stdout
    try:
        yield data_dir, address, (data_dir / "api-key").read_text().strip(), env
    finally:
        down = llada("down", env=env, timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr


def watch_states(client: LladaClient, job_id: str) -> tuple[object, list[tuple[str, str, int, int]]]:
    seen = []
    final = client.wait(job_id, timeout=JOB_TIMEOUT_S, progress=lambda j: seen.append(
        (state_name(j), stage_name(j) if j.stage else "", j.progress.step, j.progress.total)))
    return final, seen


def test_up_leaves_data_logs_and_tiny_checkpoint_in_one_folder(stack):
    data_dir, address, _, env = stack
    for path in ("jobs.db", "api-key", "stack.json", "logs/gateway.log", "logs/worker.log", "logs/reaper.log",
                 "tiny-checkpoint/config.json"):
        assert (data_dir / path).exists(), path
    status = subprocess.run([sys.executable, "-m", "workers.embedded", "status"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"SERVING at {address}" in status.stdout


def test_text_to_image_understanding_and_edit_over_grpc(stack, tmp_path):
    _, address, api_key, _ = stack
    with LladaClient(address, api_key=api_key) as client:
        job = client.submit_text_to_image("a red fox in the snow", width=128, height=128, steps=4, seed=1)
        t2i, seen = watch_states(client, job.id)
        assert state_name(t2i) == "SUCCEEDED", t2i.error
        assert t2i.attempts == 1 and "denoise" in t2i.stage_seconds
        assert any(state == "RUNNING" and step > 0 for state, _, step, _ in seen)
        [image_path] = client.download(t2i, tmp_path / "fox.png")
        image = Image.open(image_path)
        assert image.size == (128, 128)

        image_bytes = image_path.read_bytes()
        understand = client.submit_understand(image_bytes, "What is in the picture?", gen_length=16, steps=4,
                                              block_length=16)
        edit = client.submit_edit(image_bytes, "make it night", steps=4, seed=1)
        understood, _ = watch_states(client, understand.id)
        edited, _ = watch_states(client, edit.id)

    assert state_name(understood) == "SUCCEEDED", understood.error
    assert isinstance(understood.outputs.text, str) and not understood.outputs.objects
    assert state_name(edited) == "SUCCEEDED", edited.error
    [edited_path] = client.download(edited, tmp_path / "night.png")
    assert Image.open(edited_path).size == (256, 256)  # the 128² crop decoded at resolution_multiplier 2
