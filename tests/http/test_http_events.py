"""GET /v1/jobs/{id}/events: every change in order until the terminal state, resumable with Last-Event-ID, an
error event when the gateway stays away mid-stream, and a closed stream gives its watch slot back."""

from __future__ import annotations

import random
import threading

import httpx2 as httpx
import pytest
from google.protobuf import json_format

from services.http.jobs_routes import SSE_RETRY_MS, snapshot_id
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.http.sse_reader import events

TERMINAL = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


@pytest.fixture(scope="module")
def carol(door):
    return {"Authorization": f"Bearer {door.key('carol')}"}


def submit(door, headers, prompt="a fox") -> pb.Job:
    body = pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt=prompt))
    reply = httpx.post(door.url + "/v1/jobs", headers=headers, content=json_format.MessageToJson(body))
    assert reply.status_code == 202, reply.text
    return json_format.Parse(reply.text, pb.Job())


def open_stream(door, headers, job_id, **extra):
    return httpx.stream("GET", f"{door.url}/v1/jobs/{job_id}/events", headers={**headers, **extra}, timeout=20)


def job_of(event) -> pb.Job:
    assert event.event == "job", event
    return json_format.Parse(event.data, pb.Job())


def test_every_change_arrives_in_order_and_the_stream_ends_at_the_terminal_state(door, carol):
    door.worker.stepwise()
    try:
        job = submit(door, carol)
        seen: list[tuple[str, pb.Job]] = []
        retries = set()
        with open_stream(door, carol, job.id) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for event in events(stream.iter_lines()):
                seen.append((event.id, job_of(event)))
                retries.add(event.retry_ms)
                if seen[-1][1].state not in TERMINAL:
                    door.worker.step()  # the next move only once this one has been seen
    finally:
        door.worker.stepwise(False)
    moves = [(j.state, j.progress.step) for _, j in seen]
    assert moves == [(pb.JOB_STATE_QUEUED, 0), (pb.JOB_STATE_RUNNING, 0), (pb.JOB_STATE_RUNNING, 1),
                     (pb.JOB_STATE_SUCCEEDED, 1)]
    ids = [event_id for event_id, _ in seen]
    assert len(set(ids)) == len(ids) and all(ids)
    assert retries == {SSE_RETRY_MS}  # a broken stream is reconnected after a second, not the browser's default


def test_a_snapshots_id_is_what_it_says_whatever_order_it_was_built_in():
    timings = [(f"stage{i}", i / 10) for i in range(12)]
    ids = set()
    for order in range(20):  # protobuf's maps serialize in the order they were filled unless asked not to
        random.Random(order).shuffle(timings)
        job = pb.Job(id="j")
        for stage, seconds in timings:
            job.stage_seconds[stage] = seconds
        ids.add(snapshot_id(job))
    assert len(ids) == 1
    job.stage_seconds["stage3"] = 0.4
    assert snapshot_id(job) not in ids


def test_a_reconnect_with_last_event_id_resumes_without_repeating_and_misses_nothing(door, carol):
    door.worker.hold()
    job = submit(door, carol)
    with open_stream(door, carol, job.id) as stream:
        queued = next(events(stream.iter_lines()))
    assert job_of(queued).state == pb.JOB_STATE_QUEUED
    resumed: list[pb.Job] = []
    with open_stream(door, carol, job.id, **{"Last-Event-ID": queued.id}) as stream:
        timer = threading.Timer(0.5, door.worker.release)  # the job moves only after the stream is open again
        timer.start()
        resumed = [job_of(event) for event in events(stream.iter_lines())]
        timer.join()
    assert resumed and resumed[0].state != pb.JOB_STATE_QUEUED  # the snapshot it had is not sent again
    assert resumed[-1].state == pb.JOB_STATE_SUCCEEDED
    # Back after the end: the stream starts with the terminal snapshot the client missed, and ends.
    with open_stream(door, carol, job.id, **{"Last-Event-ID": queued.id}) as stream:
        after = [job_of(event) for event in events(stream.iter_lines())]
    assert [j.state for j in after] == [pb.JOB_STATE_SUCCEEDED]
    # Already holding the terminal snapshot: nothing to send (its id is stable though URLs are signed afresh).
    final_id = None
    with open_stream(door, carol, job.id) as stream:
        final_id = next(events(stream.iter_lines())).id
    with open_stream(door, carol, job.id, **{"Last-Event-ID": final_id}) as stream:
        assert list(events(stream.iter_lines())) == []


@pytest.mark.slow
def test_a_gateway_gone_for_good_mid_stream_ends_it_with_an_error_event(make_front_door, http_loop):
    lonely = make_front_door()
    headers = {"Authorization": f"Bearer {lonely.key('erin')}"}
    lonely.worker.hold()
    job = submit(lonely, headers)
    with open_stream(lonely, headers, job.id) as stream:
        received = events(stream.iter_lines())
        assert job_of(next(received)).state == pb.JOB_STATE_QUEUED
        http_loop.run(lonely.gw.gateway.stop(0))  # the stream retries a few times (~3 s), then gives up
        rest = list(received)
    assert rest and rest[-1].event == "error"
    assert '"code": "unavailable"' in rest[-1].data


def test_a_missing_job_is_a_404_before_any_stream(door, carol):
    reply = httpx.get(f"{door.url}/v1/jobs/00000000-0000-4000-8000-000000000000/events", headers=carol)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


def test_a_closed_stream_gives_the_tenants_watch_slot_back(make_front_door):
    one_watch = make_front_door(max_watches_per_tenant=1)
    headers = {"Authorization": f"Bearer {one_watch.key('dora')}"}
    one_watch.worker.hold()
    try:
        job = submit(one_watch, headers)
        for _ in range(3):  # each stream is left before its job ends; the next must still get the only slot
            with open_stream(one_watch, headers, job.id) as stream:
                assert stream.status_code == 200
                assert job_of(next(events(stream.iter_lines()))).state == pb.JOB_STATE_QUEUED
    finally:
        one_watch.worker.release()


def test_no_free_watch_slot_is_a_429_before_any_stream(make_front_door):
    one_watch = make_front_door(max_watches_per_tenant=1)
    headers = {"Authorization": f"Bearer {one_watch.key('greedy')}"}
    one_watch.worker.hold()
    try:
        job = submit(one_watch, headers)
        with open_stream(one_watch, headers, job.id) as holding:
            assert holding.status_code == 200
            refused = httpx.get(f"{one_watch.url}/v1/jobs/{job.id}/events", headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "resource_exhausted"
        assert refused.headers["retry-after"] == "1"
    finally:
        one_watch.worker.release()
