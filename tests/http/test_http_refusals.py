"""Bad input through every OpenAI route: OpenAI's error shape, the offending field as `param`, and nothing stored
(no job, no object). The openai package must raise its own error classes with that param."""

from __future__ import annotations

import base64

import httpx2 as httpx
import openai
import pytest

from tests.http.worker_double import png


@pytest.fixture(scope="module")
def tenant(door):
    return door.key("refused-user")


@pytest.fixture(scope="module")
def ai(door, tenant):
    return openai.OpenAI(base_url=door.url + "/v1", api_key=tenant, max_retries=0, timeout=30)


@pytest.fixture
def stores_nothing(door):
    jobs, objects = door.gw.job_count(), door.gw.objects()
    yield
    assert door.gw.job_count() == jobs and door.gw.objects() == objects


def image_message(url: str, text: str = "what is it?") -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


PNG_URI = "data:image/png;base64," + base64.b64encode(png(32, 32)).decode()


@pytest.mark.parametrize("call, param", [
    (lambda ai: ai.images.generate(prompt="x", n=2), "n"),
    (lambda ai: ai.images.generate(prompt="x", size="big"), "size"),
    (lambda ai: ai.images.generate(prompt="x", size="4096x4096"), "size"),
    (lambda ai: ai.images.generate(prompt="x", size="100x128"), "size"),
    (lambda ai: ai.images.generate(prompt="   "), "prompt"),
    (lambda ai: ai.images.generate(prompt="x", extra_body={"steps": 0}), "steps"),
    (lambda ai: ai.images.generate(prompt="x", extra_body={"mode": "dreaming"}), "mode"),
    (lambda ai: ai.images.generate(prompt="x", extra_body={"sprint": {"remasking": "coin"}}), "sprint.remasking"),
    (lambda ai: ai.images.generate(prompt="x", extra_body={"sprint": {"bogus": 1}}), "sprint"),
    (lambda ai: ai.images.generate(prompt="x", quality="hd"), "quality"),
    (lambda ai: ai.images.edit(image=("a.png", png(32, 32)), prompt="x", mask=("m.png", png(32, 32))), "mask"),
    (lambda ai: ai.images.edit(image=("a.png", b"not an image"), prompt="blue"), "image"),
    (lambda ai: ai.images.edit(image=("a.png", png(32, 32)), prompt="x", size="512x512"), "size"),
    (lambda ai: ai.images.edit(image=("a.png", png(32, 32)), prompt=""), "prompt"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message("https://example.com/a.png")),
     "messages[0].content[1].image_url.url"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=[{"role": "user", "content": "hi"}]),
     "messages[0].content"),
    (lambda ai: ai.chat.completions.create(
        model="llada2.0-uni", messages=[{"role": "system", "content": "be brief"}, *image_message(PNG_URI)]),
     "messages"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message("data:image/png;base64,@@")),
     "messages[0].content[1].image_url.url"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message(PNG_URI), max_tokens=0),
     "max_tokens"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message(PNG_URI, "  ")),
     "messages"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message(PNG_URI), n=3), "n"),
    (lambda ai: ai.chat.completions.create(model="llada2.0-uni", messages=image_message(PNG_URI), tools=[]), "tools"),
])
def test_bad_input_is_a_400_naming_the_param_and_stores_nothing(ai, stores_nothing, call, param):
    with pytest.raises(openai.BadRequestError) as caught:
        call(ai)
    assert caught.value.param == param, caught.value.message
    assert caught.value.type == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in caught.value.message


def test_an_unknown_model_is_a_404_naming_model(ai, stores_nothing):
    with pytest.raises(openai.NotFoundError) as caught:
        ai.images.generate(model="dall-e-3", prompt="a fox")
    assert caught.value.param == "model" and caught.value.code == "model_not_found"


def test_a_missing_or_wrong_key_is_a_401(door, stores_nothing):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=door.url + "/v1", api_key="llada_wrong", max_retries=0).images.generate(prompt="x")
    reply = httpx.post(door.url + "/v1/images/generations", json={"prompt": "x"})
    assert reply.status_code == 401 and reply.json()["error"]["code"] == "unauthenticated"
    reply = httpx.get(door.url + "/v1/jobs", headers={"Authorization": "Basic abc"})
    assert reply.status_code == 401 and reply.json()["error"]["param"] == "Authorization"


def test_a_body_past_the_limit_is_a_413_before_it_is_read(make_front_door):
    small = make_front_door(http_max_body_bytes=4096)
    key = small.key("big-body")
    headers = {"Authorization": f"Bearer {key}"}
    declared = httpx.post(small.url + "/v1/jobs", content=b"{" + b" " * 5000 + b"}", headers=headers)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"
    streamed = httpx.post(small.url + "/v1/jobs", content=iter([b"{", b" " * 3000, b" " * 3000, b"}"]),
                          headers=headers)
    assert streamed.status_code == 413 and "error" in streamed.json()
    at_limit = httpx.post(small.url + "/v1/jobs", headers=headers,
                          content=b'{"textToImage": {"prompt": "a fox"}}'.ljust(4096))
    assert at_limit.status_code == 202, at_limit.text
    assert small.gw.job_count() == 1


@pytest.mark.parametrize("header", ["Bearer caf\xe9", "Bearer a\x7fb", "Token abc", "Bearer"])
def test_an_unusable_authorization_header_is_a_401_in_the_error_shape(door, header):
    reply = httpx.get(door.url + "/v1/jobs", headers={"Authorization": header.encode("latin-1")})
    assert reply.status_code == 401 and reply.json()["error"]["param"] == "Authorization"
