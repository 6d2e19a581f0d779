"""The embedded default as a newcomer meets it (issue 12): `llada-server up` with no model named serves the trained
toy checkpoint; over gRPC, with the service's default settings, pictures come back with the prompt's place and background, questions
about it are answered exactly and an edit changes what it says. A fixed sample; the full gate is bench/toy_gate.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from client import LladaClient, state_name
from tests.e2e.e2e_jobs import JOB_TIMEOUT_S, free_port
from server import embedded
from workers.model import toyworld as world

PROMPTS = [world.combination(i) for i in (14, 203, 390)]  # held-out, training, training
EXACT_QUESTIONS = world.QUESTIONS  # all five, `describe the picture` among them


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = embedded.settings_for(tmp_path_factory.mktemp("toy-default"), f"127.0.0.1:{free_port()}", 0,
                                     f"127.0.0.1:{free_port()}", 0)
    info = embedded.start_stack(settings, log=lambda message: None)
    try:
        with LladaClient(info.grpc_address, api_key=info.api_key) as llada:
            yield llada
    finally:
        embedded.stop_stack(Path(info.data_dir))


def picture(client: LladaClient, job, folder: Path) -> Image.Image:
    assert state_name(job) == "SUCCEEDED", job.error
    [path] = client.download(job, folder / f"{job.id}.png")
    return Image.open(path).convert("RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_text_to_image_understanding_and_edit_of_the_world(client, tmp_path):
    # What the shipped model reliably gets right through pixels (tests/model/test_toy_checkpoint.py says why).
    jobs = [(comb, client.submit_text_to_image(world.caption(comb), width=128, height=128, seed=comb.index))
            for comb in PROMPTS]
    seen = [world.check(picture(client, client.wait(job.id, timeout=JOB_TIMEOUT_S), tmp_path), comb)
            for comb, job in jobs]
    assert all(s["background"] for s in seen), seen
    assert sum(s["position"] for s in seen) >= len(seen) - 1 and sum(s["colour"] for s in seen) >= len(seen) - 1, seen

    scene = world.scene_of(PROMPTS[0], 1)
    asked = [(q, world.answer(q, scene), client.submit_understand(png(world.render(scene)), q)) for q in EXACT_QUESTIONS]
    for question, expected, job in asked:
        answered = client.wait(job.id, timeout=JOB_TIMEOUT_S)
        assert state_name(answered) == "SUCCEEDED" and answered.outputs.text == expected, question

    source = world.scene_of(PROMPTS[1], 0)
    edit = world.make_edit(source, "background", "black" if source.background != "black" else "white")
    job = client.wait(client.submit_edit(png(world.render(source)), edit.instruction, seed=2).id, timeout=JOB_TIMEOUT_S)
    edited = world.check(picture(client, job, tmp_path), edit.target)
    assert edited["background"] and edited["position"] and edited["colour"], edited
