"""The OpenAI-style calls wait for their job up to http_wait_timeout_s; past it they answer 202 with the job to
follow. A job that fails answers in OpenAI's error shape with its field; a streamed answer ends with an error."""

from __future__ import annotations

import base64
import time

import httpx2 as httpx
import openai
import pytest

from tests.http.worker_double import png


@pytest.fixture(scope="module")
def impatient(make_front_door):
    return make_front_door(http_wait_timeout_s=0.5)


def test_past_the_wait_the_answer_is_202_with_the_job_which_runs_on(impatient):
    key = impatient.key("patient")
    impatient.worker.hold()
    try:
        reply = httpx.post(impatient.url + "/v1/images/generations", json={"prompt": "a slow fox"},
                           headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert reply.status_code == 202, reply.text
        body = reply.json()
        job_id = reply.headers["x-llada-job-id"]
        assert body["id"] == job_id and body["state"] == "QUEUED" and body["url"] == f"/v1/jobs/{job_id}"
        assert reply.headers["location"] == f"/v1/jobs/{job_id}"
    finally:
        impatient.worker.release()
    with httpx.stream("GET", f"{impatient.url}/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {key}"},
                      timeout=20) as stream:
        last = [line for line in stream.iter_lines() if line.startswith("data:")][-1]
    assert '"state": "JOB_STATE_SUCCEEDED"' in last


def test_a_failed_job_is_an_openai_error_naming_its_field(door):
    ai = openai.OpenAI(base_url=door.url + "/v1", api_key=door.key("failing"), max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        ai.images.with_raw_response.generate(prompt="a fox [fail]")
    assert caught.value.param == "prompt" and "failed" in caught.value.message
    assert caught.value.response.headers["x-llada-job-id"]


def test_a_streamed_answer_whose_job_fails_ends_with_an_error(door):
    ai = openai.OpenAI(base_url=door.url + "/v1", api_key=door.key("failing-stream"), max_retries=0)
    uri = "data:image/png;base64," + base64.b64encode(png(32, 32)).decode()
    stream = ai.chat.completions.create(model="llada2.0-uni", stream=True, messages=[{"role": "user", "content": [
        {"type": "text", "text": "why [fail]"}, {"type": "image_url", "image_url": {"url": uri}}]}])
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "failed" in caught.value.message


def test_a_caller_that_goes_away_stops_the_wait_and_frees_its_watch_slot(make_front_door):
    """The job runs on; the wait (a WatchJob stream on the gateway) ends with its caller, not at the timeout."""
    one_watch = make_front_door(max_watches_per_tenant=1, http_wait_timeout_s=120)
    key = one_watch.key("leaver")
    headers = {"Authorization": f"Bearer {key}"}
    one_watch.worker.hold()
    try:
        with pytest.raises(httpx.TimeoutException):
            httpx.post(one_watch.url + "/v1/images/generations", json={"prompt": "a fox I will not wait for"},
                       headers=headers, timeout=1.0)
        [job] = httpx.get(one_watch.url + "/v1/jobs", headers=headers).json()["jobs"]
        assert job["state"] == "JOB_STATE_QUEUED"  # the job stays
        events = f"{one_watch.url}/v1/jobs/{job['id']}/events"
        deadline = time.monotonic() + 10
        while True:  # the slot comes back within a disconnect poll or two, not after 120 s
            with httpx.stream("GET", events, headers=headers, timeout=10) as stream:
                if stream.status_code == 200:
                    break
                assert stream.status_code == 429, stream.read()
            assert time.monotonic() < deadline, "the abandoned wait still holds the tenant's only watch slot"
            time.sleep(0.2)
    finally:
        one_watch.worker.release()
