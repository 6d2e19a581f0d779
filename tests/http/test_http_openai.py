"""The official `openai` package, unmodified, against the front door: images.generate, images.edit and
chat.completions.create (with and without streaming). Each call is a normal job of the caller's tenant."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from client.sync_client import LladaClient
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.http.worker_double import answer_to, png


@pytest.fixture(scope="module")
def tenant(door):
    return door.key("openai-user")


@pytest.fixture(scope="module")
def ai(door, tenant):
    return openai.OpenAI(base_url=door.url + "/v1", api_key=tenant, max_retries=0, timeout=30)


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def ask(question: str, image: bytes) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": question},
                                         {"type": "image_url", "image_url": {"url": data_uri(image)}}]}]


def test_images_generate_returns_the_jobs_image_and_the_job_is_listed(door, ai, tenant):
    raw = ai.images.with_raw_response.generate(model="llada2.0-uni", prompt="a red circle", size="256x128",
                                                extra_body={"seed": 3, "steps": 4, "mode": "normal"})
    result = raw.parse()
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (256, 128)
    job_id = raw.headers["x-llada-job-id"]
    with LladaClient(door.gw.address, api_key=tenant) as llada:
        job = llada.get(job_id)
        assert job.params["seed"] == 3 and job.params["steps"] == 4 and job.params["width"] == 256
        assert job_id in [j.id for j in llada.list().jobs]


def test_images_generate_as_url_gives_the_presigned_url(ai):
    result = ai.images.generate(prompt="a blue square", response_format="url")
    assert result.data[0].url.startswith(("file://", "http://", "https://"))
    assert result.data[0].b64_json is None


def test_images_edit_sends_the_upload_and_returns_the_edited_image(door, ai, tenant):
    raw = ai.images.with_raw_response.edit(image=("in.png", png(96, 64), "image/png"), prompt="make it blue",
                                            extra_body={"cfg_text_scale": 3.5, "seed": 9})
    result = raw.parse()
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).format == "PNG"
    with LladaClient(door.gw.address, api_key=tenant) as llada:
        job = llada.get(raw.headers["x-llada-job-id"])
    assert job.params["instruction"] == "make it blue" and job.params["cfg_text_scale"] == 3.5


def test_chat_completion_answers_a_question_about_an_image(door, ai, tenant):
    completion = ai.chat.completions.create(model="llada2.0-uni", messages=ask("what shape?", png(64, 64)),
                                            max_tokens=48)
    assert completion.choices[0].message.content == answer_to("what shape?")
    assert completion.choices[0].finish_reason == "stop"
    with LladaClient(door.gw.address, api_key=tenant) as llada:
        job = llada.get(completion.id.removeprefix("chatcmpl-"))
    assert job.params["gen_length"] == 48


def test_chat_completion_streams_chunks_that_join_to_the_answer(ai):
    stream = ai.chat.completions.create(model="llada2.0-uni", messages=ask("what color?", png(64, 64)), stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == answer_to("what color?")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_streamed_answer_arrives_as_its_blocks_settle_before_the_job_ends(door, ai, tenant):
    door.worker.stepwise()
    try:
        stream = ai.chat.completions.create(model="llada2.0-uni", messages=ask("where is it?", png(64, 64)),
                                            stream=True)
        chunks = iter(stream)
        assert next(chunks).choices[0].delta.role == "assistant"
        for _ in range(3):  # claimed, a step, then the first block's words settle
            door.worker.step()
        first = next(chunks)
        assert first.choices[0].delta.content == "an answer"
        job_id = first.id.removeprefix("chatcmpl-")
        with LladaClient(door.gw.address, api_key=tenant) as llada:
            assert llada.get(job_id).state == pb.JOB_STATE_RUNNING  # the words came before the answer was done
        door.worker.step()  # finished
        rest = list(chunks)
    finally:
        door.worker.stepwise(False)
    assert "".join(c.choices[0].delta.content or "" for c in rest) == " to: where is it?"
    assert rest[-1].choices[0].finish_reason == "stop"


def test_models_lists_the_served_model(ai):
    assert [m.id for m in ai.models.list()] == ["llada2.0-uni"]
    assert ai.models.retrieve("llada2.0-uni").id == "llada2.0-uni"
    with pytest.raises(openai.NotFoundError):
        ai.models.retrieve("gpt-4o")
