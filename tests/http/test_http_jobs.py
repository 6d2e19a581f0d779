"""The job API as JSON: bodies round-trip through protobuf's own JSON parser, every route keeps one tenant's jobs
from another, Idempotency-Key is the request_id, and a finished job's output is served."""

from __future__ import annotations

import base64
import io

import httpx2 as httpx
import pytest
from google.protobuf import json_format
from PIL import Image

from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.http.worker_double import answer_to, png


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def alice(door):
    return auth(door.key("alice"))


@pytest.fixture(scope="module")
def bob(door):
    return auth(door.key("bob"))


def submit(door, headers, body: pb.SubmitJobRequest, **kw) -> httpx.Response:
    return httpx.post(door.url + "/v1/jobs", content=json_format.MessageToJson(body), headers=headers, **kw)


def parse(reply: httpx.Response, message_type):
    assert reply.headers["content-type"] == "application/json" and reply.status_code < 300, reply.text
    return json_format.Parse(reply.text, message_type())


def wait_terminal(door, headers, job_id) -> pb.Job:
    with httpx.stream("GET", f"{door.url}/v1/jobs/{job_id}/events", headers=headers, timeout=20) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                job = json_format.Parse(line.removeprefix("data:").strip(), pb.Job())
                if job.state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
                    return job
    raise AssertionError("the stream ended before a terminal state")


def test_submit_get_list_round_trip_through_protobufs_json_parser(door, alice):
    request = pb.SubmitJobRequest(priority=3, text_to_image=pb.TextToImageParams(prompt="a fox", width=128, seed=5))
    reply = submit(door, alice, request)
    assert reply.status_code == 202
    job = parse(reply, pb.Job)
    assert reply.headers["location"] == f"/v1/jobs/{job.id}"
    assert job.kind == pb.JOB_KIND_TEXT_TO_IMAGE and job.priority == 3 and job.params["seed"] == 5
    got = parse(httpx.get(f"{door.url}/v1/jobs/{job.id}", headers=alice), pb.Job)
    assert got.id == job.id and got.params == job.params
    page = parse(httpx.get(f"{door.url}/v1/jobs", params={"kind": "text_to_image", "page_size": 50}, headers=alice),
                 pb.ListJobsResponse)
    assert job.id in [j.id for j in page.jobs]
    done = wait_terminal(door, alice, job.id)
    assert done.state == pb.JOB_STATE_SUCCEEDED and done.outputs.seed == 7


def test_snake_case_and_base64_bytes_are_accepted_as_protobuf_json_allows(door, alice):
    body = {"understand": {"image": base64.b64encode(png(32, 32)).decode(), "question": "what is it?",
                           "gen_length": 16}}
    reply = httpx.post(door.url + "/v1/jobs", json=body, headers=alice)
    assert reply.status_code == 202, reply.text
    job = wait_terminal(door, alice, parse(reply, pb.Job).id)
    assert job.outputs.text == answer_to("what is it?")
    output = httpx.get(f"{door.url}/v1/jobs/{job.id}/output", headers=alice)
    assert output.status_code == 200 and output.text == answer_to("what is it?")


def test_list_filters_and_pages(door, alice):
    for prompt in ("page one", "page two"):  # this test's own jobs: it passes alone and in any order
        parse(submit(door, alice, pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt=prompt))), pb.Job)
    for param in ("state", "kind"):
        unknown = httpx.get(f"{door.url}/v1/jobs", params={param: "sleeping"}, headers=alice)
        assert unknown.status_code == 400
        assert (unknown.json()["error"]["param"], unknown.json()["error"]["message"]) == (
            param, f"{param}: unknown value 'sleeping'")
    bad_size = httpx.get(f"{door.url}/v1/jobs", params={"page_size": "many"}, headers=alice)
    assert bad_size.status_code == 400 and bad_size.json()["error"]["param"] == "page_size"
    first = parse(httpx.get(f"{door.url}/v1/jobs", params={"page_size": 1}, headers=alice), pb.ListJobsResponse)
    assert len(first.jobs) == 1 and first.next_page_token
    second = parse(httpx.get(f"{door.url}/v1/jobs", params={"page_size": 1, "page_token": first.next_page_token},
                             headers=alice), pb.ListJobsResponse)
    assert second.jobs[0].id != first.jobs[0].id
    bad_token = httpx.get(f"{door.url}/v1/jobs", params={"page_token": "forged"}, headers=alice)
    assert bad_token.status_code == 400 and bad_token.json()["error"]["param"] == "page_token"


def test_idempotency_key_returns_the_first_job_and_refuses_a_different_request(door, alice):
    request = pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="one fox"))
    first = parse(submit(door, {**alice, "Idempotency-Key": "fox-1"}, request), pb.Job)
    again = parse(submit(door, {**alice, "Idempotency-Key": "fox-1"}, request), pb.Job)
    assert again.id == first.id and first.request_id == "fox-1"
    other = pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="two foxes"))
    clash = submit(door, {**alice, "Idempotency-Key": "fox-1"}, other)
    assert clash.status_code == 409 and clash.json()["error"]["param"] == "request_id"
    mismatch = submit(door, {**alice, "Idempotency-Key": "b"},
                      pb.SubmitJobRequest(request_id="a", text_to_image=pb.TextToImageParams(prompt="x")))
    assert mismatch.status_code == 400 and mismatch.json()["error"]["param"] == "request_id"


def test_a_bad_body_names_the_field_and_stores_nothing(door, alice):
    jobs = door.gw.job_count()
    cases = {b'{"textToImage": {"width": "wide"}}': "text_to_image.width",
             b'{"textToImage": {"prompt": "x", "colour": 1}}': "text_to_image.colour",
             b'{"textToImage": {"prompt": "x", "sprint": {"keepRatio": "most"}}}': "text_to_image.sprint.keep_ratio",
             b'{"textToImage": {"prompt": "x", "width": 100}}': "text_to_image.width",
             b'{"understand": {"image": "not base64!", "question": "q"}}': "understand.image",
             b'{"priority": 11, "textToImage": {"prompt": "x"}}': "priority",
             b"{}": "params",
             b"[1, 2]": None,
             b"not json": None}
    for body, param in cases.items():
        reply = httpx.post(door.url + "/v1/jobs", content=body, headers=alice)
        assert reply.status_code == 400, (body, reply.text)
        assert reply.json()["error"]["param"] == param, (body, reply.json())
    assert door.gw.job_count() == jobs


def test_another_tenants_job_is_invisible_through_every_route(door, alice, bob):
    door.worker.hold()
    try:
        job = parse(submit(door, alice, pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="private"))),
                    pb.Job)
        base = f"{door.url}/v1/jobs/{job.id}"
        for method, url in (("GET", base), ("POST", base + ":cancel"), ("DELETE", base), ("GET", base + "/events"),
                            ("GET", base + "/output")):
            reply = httpx.request(method, url, headers=bob)
            assert reply.status_code == 404, (method, url, reply.text)
            assert reply.json()["error"]["code"] == "not_found"
        listed = parse(httpx.get(door.url + "/v1/jobs", headers=bob), pb.ListJobsResponse)
        assert job.id not in [j.id for j in listed.jobs]
        # Still there, untouched, for its owner.
        assert parse(httpx.get(base, headers=alice), pb.Job).state == pb.JOB_STATE_QUEUED
    finally:
        door.worker.release()


def test_cancel_then_delete(door, alice):
    door.worker.hold()
    try:
        job = parse(submit(door, alice, pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="stop me"))),
                    pb.Job)
        cancelled = parse(httpx.post(f"{door.url}/v1/jobs/{job.id}:cancel", headers=alice), pb.Job)
        assert cancelled.state == pb.JOB_STATE_CANCELLED
        no_output = httpx.get(f"{door.url}/v1/jobs/{job.id}/output", headers=alice)
        assert no_output.status_code == 409 and no_output.json()["error"]["param"] == "job_id"
    finally:
        door.worker.release()
    deleted = parse(httpx.delete(f"{door.url}/v1/jobs/{job.id}", headers=alice), pb.DeleteJobResponse)
    assert deleted.job_id == job.id
    assert httpx.get(f"{door.url}/v1/jobs/{job.id}", headers=alice).status_code == 404
    bad_id = httpx.get(f"{door.url}/v1/jobs/not-a-uuid", headers=alice)
    assert bad_id.status_code == 400 and bad_id.json()["error"]["param"] == "job_id"


def test_output_serves_the_image_bytes_from_the_local_store(door, alice):
    job = parse(submit(door, alice, pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(
        prompt="a square", width=160, height=128))), pb.Job)
    wait_terminal(door, alice, job.id)
    output = httpx.get(f"{door.url}/v1/jobs/{job.id}/output", headers=alice)
    assert output.status_code == 200 and output.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(output.content)).size == (160, 128)
    missing = httpx.get(f"{door.url}/v1/jobs/{job.id}/output", params={"name": "mask"}, headers=alice)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"
