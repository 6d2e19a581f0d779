"""The three job kinds through the gRPC client, as a user runs them, with what a user would check."""

from __future__ import annotations

import socket
from pathlib import Path

from PIL import Image

from client import LladaClient, stage_name, state_name

JOB_TIMEOUT_S = 120
# The fewest turbo decoder steps: the path is the same, the CPU time a quarter of the default 8.
E2E_DECODER_STEPS = 2
# docs/model.md §3.5's 512-base edit crop costs minutes on a CPU; the 128 base edits an 8×8 grid.
E2E_EDIT_CROP_BASE = "128"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_watching(client: LladaClient, job_id: str):
    seen = []
    final = client.wait(job_id, timeout=JOB_TIMEOUT_S, progress=lambda j: seen.append(
        (state_name(j), stage_name(j) if j.stage else "", j.progress.step, j.progress.total)))
    return final, seen


def run_three_kinds(address: str, api_key: str, out: Path) -> None:
    with LladaClient(address, api_key=api_key) as client:
        job = client.submit_text_to_image("a red fox in the snow", width=128, height=128, steps=4, seed=1,
                                          decoder_steps=E2E_DECODER_STEPS)
        t2i, seen = wait_watching(client, job.id)
        assert state_name(t2i) == "SUCCEEDED", t2i.error
        assert t2i.attempts == 1 and "denoise" in t2i.stage_seconds and "decode" in t2i.stage_seconds
        assert any(state == "RUNNING" and step > 0 for state, _, step, _ in seen)
        [image_path] = client.download(t2i, out / "fox.png")
        assert Image.open(image_path).size == (128, 128)

        source = image_path.read_bytes()
        understand = client.submit_understand(source, "What is in the picture?", gen_length=16, steps=4,
                                              block_length=16)
        edit = client.submit_edit(source, "make it night", steps=4, seed=1, decoder_steps=E2E_DECODER_STEPS)
        understood, _ = wait_watching(client, understand.id)
        edited, _ = wait_watching(client, edit.id)

        assert state_name(understood) == "SUCCEEDED", understood.error
        assert isinstance(understood.outputs.text, str) and not understood.outputs.objects
        assert state_name(edited) == "SUCCEEDED", edited.error
        [edited_path] = client.download(edited, out / "night.png")
        assert Image.open(edited_path).size == (256, 256)  # the 128² crop decoded at resolution_multiplier 2
