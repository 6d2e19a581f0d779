"""A webhook travels through every HTTP way to submit: the job API's body, and the OpenAI routes' `webhook` extra
field (JSON, or flattened in the edit's form as the openai client sends it). The gateway's rules hold unchanged."""

from __future__ import annotations

import base64

import httpx2 as httpx
import openai
import pytest

from client.sync_client import LladaClient
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.webhooks.secrets import create_secret
from tests.http.worker_double import png

HOOK = {"url": "https://hooks.example.com/llada", "events": ["started", "completed"]}
WANTED = [pb.WEBHOOK_EVENT_STARTED, pb.WEBHOOK_EVENT_COMPLETED]


@pytest.fixture(scope="module")
def tenant(door):
    key = door.key("hooked")
    door.gw.db(create_secret, "hooked")
    return key


@pytest.fixture(scope="module")
def ai(door, tenant):
    return openai.OpenAI(base_url=door.url + "/v1", api_key=tenant, max_retries=0, timeout=30)


def webhook_of(door, tenant, job_id) -> pb.Webhook:
    with LladaClient(door.gw.address, api_key=tenant) as llada:
        return llada.get(job_id).webhook


def test_each_openai_route_passes_the_webhook_to_the_job(door, tenant, ai):
    generated = ai.images.with_raw_response.generate(prompt="a fox", extra_body={"webhook": HOOK})
    edited = ai.images.with_raw_response.edit(image=("a.png", png(32, 32)), prompt="blue",
                                              extra_body={"webhook": HOOK})
    uri = "data:image/png;base64," + base64.b64encode(png(32, 32)).decode()
    answered = ai.chat.completions.create(model="llada2.0-uni", extra_body={"webhook": HOOK}, messages=[
        {"role": "user", "content": [{"type": "text", "text": "what?"},
                                     {"type": "image_url", "image_url": {"url": uri}}]}])
    for job_id in (generated.headers["x-llada-job-id"], edited.headers["x-llada-job-id"],
                   answered.id.removeprefix("chatcmpl-")):
        hook = webhook_of(door, tenant, job_id)
        assert hook.url == HOOK["url"] and list(hook.events) == WANTED


def test_the_job_api_takes_the_webhook_in_its_body(door, tenant):
    reply = httpx.post(door.url + "/v1/jobs", headers={"Authorization": f"Bearer {tenant}"},
                       json={"textToImage": {"prompt": "a fox"},
                             "webhook": {"url": HOOK["url"], "events": ["WEBHOOK_EVENT_STARTED"]}})
    assert reply.status_code == 202, reply.text
    assert reply.json()["webhook"] == {"url": HOOK["url"], "events": ["WEBHOOK_EVENT_STARTED"]}


@pytest.mark.parametrize("hook, param", [
    ({"url": "http://hooks.example.com/x"}, "webhook.url"),       # http is refused by default
    ({"url": "https://hooks.example.com/x", "events": ["sometimes"]}, "webhook.events"),
    ({"url": "https://hooks.example.com/x", "secret": "mine"}, "webhook"),
])
def test_a_bad_webhook_is_refused_naming_it_and_stores_nothing(door, ai, hook, param):
    jobs = door.gw.job_count()
    with pytest.raises(openai.BadRequestError) as caught:
        ai.images.generate(prompt="a fox", extra_body={"webhook": hook})
    assert caught.value.param == param
    assert door.gw.job_count() == jobs


def test_a_tenant_without_a_signing_secret_is_told_so(door):
    ai = openai.OpenAI(base_url=door.url + "/v1", api_key=door.key("unsigned"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        ai.images.generate(prompt="a fox", extra_body={"webhook": HOOK})
    assert caught.value.code == "failed_precondition" and "webhook-secret" in caught.value.message
