"""WatchJob until a terminal state (states driven through the repository, as a worker would), resuming
a watch, the database re-read safety net, cancel of queued and running jobs, failures, and delete."""

import asyncio
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared import attempts
from shared.objectstore import result_key
from services.gateway.servicer import watch_poll_timeout
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.deadlines import deadline_s

WORKER = "worker-test-1"
TIMEOUT = deadline_s(10)
MISSING_JOB_ID = "00000000-0000-4000-8000-000000000000"


class Watcher:
    """Collects a WatchJob stream in a thread; ``first`` is set once the first snapshot arrived."""

    def __init__(self, gw, md, job_id):
        self.snapshots: list[pb.Job] = []
        self.first = threading.Event()
        self.call = gw.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=md, timeout=TIMEOUT)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.first.wait(TIMEOUT), "no first snapshot"

    def _run(self):
        try:
            for job in self.call:
                self.snapshots.append(job)
                self.first.set()
        except grpc.RpcError:  # the stream ended with a status: the test reads it from `call`
            pass

    def wait_for(self, predicate):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.snapshots and predicate(self.snapshots[-1]):
                return self.snapshots[-1]
            time.sleep(0.02)
        raise AssertionError(f"not seen; last: {self.snapshots[-1] if self.snapshots else None}")

    def finish(self) -> list[pb.Job]:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive(), "watch did not end"
        return self.snapshots


def submit(gw, md, **kw):
    return gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="fox", **kw)), metadata=md)


def test_watch_streams_snapshots_in_order_until_succeeded(gw):
    md = gw.key("w-order")
    job = submit(gw, md, width=256, height=256, mode=pb.GENERATION_MODE_THINKING)
    watch = Watcher(gw, md, job.id)
    assert watch.snapshots[0].state == pb.JOB_STATE_QUEUED

    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    assert attempt is not None
    gw.events.publish(job.id, {"type": "state", "state": "RUNNING"})
    watch.wait_for(lambda j: j.state == pb.JOB_STATE_RUNNING)
    for step in range(1, 5):
        gw.db(attempts.record_progress, attempt, "denoise", step, 4)
        gw.events.publish(job.id, {"type": "progress", "stage": "denoise", "step": step, "total": 4})
        watch.wait_for(lambda j, step=step: j.progress.step == step)
    image = png(32, 32)
    gw.store.put(result_key(job.id, 1, "image.png"), image, "image/png")
    gw.db(attempts.finish_job, attempt, output_keys={"image": result_key(job.id, 1, "image.png")},
          output_text="a fox, in snow", timings={"tokenize": 0.1, "denoise": 1.5, "decode": 0.7})
    gw.events.publish(job.id, {"type": "state", "state": "SUCCEEDED"})
    snapshots = watch.finish()

    states = [s.state for s in snapshots]
    assert states == sorted(states)  # QUEUED < RUNNING < SUCCEEDED: never backwards
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_SUCCEEDED
    steps = [s.progress.step for s in snapshots if s.state == pb.JOB_STATE_RUNNING and s.stage == pb.STAGE_DENOISE]
    assert steps == [1, 2, 3, 4]
    final = snapshots[-1]
    assert final.attempts == 1 and final.queue_position == 0
    assert final.stage_seconds["denoise"] == pytest.approx(1.5)
    assert final.outputs.thinking_text == "a fox, in snow"  # thinking pass of a text-to-image job
    (obj,) = final.outputs.objects
    assert obj.name == "image" and obj.object_key == f"results/{job.id}/1/image.png"
    with urllib.request.urlopen(obj.url) as response:
        assert response.read() == image
    assert final.finished_at.seconds >= final.started_at.seconds >= final.created_at.seconds > 0


def test_watch_resumes_from_the_current_snapshot(gw):
    md = gw.key("w-resume")
    job = submit(gw, md)
    first = gw.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=TIMEOUT)
    assert next(first).state == pb.JOB_STATE_QUEUED
    first.cancel()  # the client goes away
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.db(attempts.record_progress, attempt, "decode", 3, 8)
    again = gw.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=TIMEOUT)
    current = next(again)
    assert (current.state, current.stage, current.progress.step, current.progress.total) == \
        (pb.JOB_STATE_RUNNING, pb.STAGE_DECODE, 3, 8)
    again.cancel()
    gw.db(attempts.fail_job, attempt, code="MODEL_ERROR", message="out of memory", field="text_to_image.width")
    # A terminal job's watch answers its final snapshot and ends.
    (only,) = list(gw.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=TIMEOUT))
    assert only.state == pb.JOB_STATE_FAILED
    assert (only.error.code, only.error.message, only.error.field) == \
        ("MODEL_ERROR", "out of memory", "text_to_image.width")


def test_watch_sees_changes_that_were_never_published(gw):
    md = gw.key("w-safety-net")
    job = submit(gw, md)
    watch = Watcher(gw, md, job.id)
    # No event: the periodic re-read finds it.
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    watch.wait_for(lambda j: j.state == pb.JOB_STATE_RUNNING)
    gw.db(attempts.mark_cancelled, attempt)
    assert watch.finish()[-1].state == pb.JOB_STATE_CANCELLED


def test_cancel_of_a_queued_job_is_immediate_and_it_never_runs(gw):
    md = gw.key("c-queued")
    ahead = submit(gw, md)
    job = submit(gw, md)
    assert job.queue_position == ahead.queue_position + 1
    cancelled = gw.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md)
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.cancel_requested
    assert cancelled.queue_position == 0  # out of the queue
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=ahead.id), metadata=md).queue_position == ahead.queue_position
    assert gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60) is None  # the late message is a no-op
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).state == pb.JOB_STATE_CANCELLED


def next_event(gw, loop_thread, job_id: str):
    """A future of the next event published for the job, subscribed to before this returns."""
    subscribed = threading.Event()

    async def first_event():
        async with gw.events.subscribe(job_id) as events:
            subscribed.set()
            return await asyncio.wait_for(events.__anext__(), TIMEOUT)

    pending = asyncio.run_coroutine_threadsafe(first_event(), loop_thread.loop)
    assert subscribed.wait(TIMEOUT)
    return pending


def test_cancel_of_a_running_job_goes_to_cancelling_and_is_published(gw, loop_thread):
    md = gw.key("c-running")
    job = submit(gw, md)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    pending = next_event(gw, loop_thread, job.id)
    answer = gw.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md)
    assert answer.state == pb.JOB_STATE_CANCELLING
    assert pending.result(TIMEOUT) == {"type": "cancel", "state": "CANCELLING"}
    assert gw.db(attempts.check_attempt, attempt) is attempts.AttemptStatus.CANCEL_REQUESTED  # the worker's poll
    gw.db(attempts.mark_cancelled, attempt)
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).state == pb.JOB_STATE_CANCELLED


def test_cancel_of_a_finished_job_changes_nothing_and_answers_with_its_output_urls(gw):
    md = gw.key("c-finished")
    job = submit(gw, md)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    key = result_key(job.id, 1, "image.png")
    gw.store.put(key, png(16, 16), "image/png")
    gw.db(attempts.finish_job, attempt, output_keys={"image": key})

    answer = gw.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md)

    assert answer.state == pb.JOB_STATE_SUCCEEDED and not answer.cancel_requested
    [image] = answer.outputs.objects
    assert image.object_key == key and image.url == gw.store.presigned_get(key, gw.settings.presign_expiry_s)
    expires_in = image.url_expires_at.ToDatetime(timezone.utc) - datetime.now(timezone.utc)
    assert timedelta(seconds=gw.settings.presign_expiry_s - 60) < expires_in <= timedelta(
        seconds=gw.settings.presign_expiry_s)
    got = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    for snapshot in (answer, got):
        snapshot.outputs.objects[0].ClearField("url_expires_at")  # signed a moment apart
    assert answer == got


def test_a_watch_sends_a_snapshot_only_when_the_job_changed_however_often_it_reads(make_gateway, monkeypatch):
    gw = make_gateway(watch_poll_interval_s=0.01)
    md = gw.key("w-unchanged")
    job = submit(gw, md)
    servicer, reads = gw.gateway.servicer, []
    read = servicer._watch_read

    async def counted(*args):
        reads.append(args)
        return await read(*args)
    monkeypatch.setattr(servicer, "_watch_read", counted)
    watch = Watcher(gw, md, job.id)
    wait_until(lambda: len(reads) >= 10, "the watch stopped reading")
    assert [s.state for s in watch.snapshots] == [pb.JOB_STATE_QUEUED]  # ten reads, one snapshot

    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)  # no event: a read finds it
    watch.wait_for(lambda j: j.state == pb.JOB_STATE_RUNNING)
    gw.db(attempts.mark_cancelled, attempt)
    assert [s.state for s in watch.finish()] == [pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_CANCELLED]


class BoundRngDouble:
    """Draws the bound the test names, and records the range it was asked for."""

    def __init__(self, which: int):
        self.which, self.asked = which, None

    def uniform(self, low, high):
        self.asked = (low, high)
        return (low, high)[self.which]


def test_a_watch_polls_within_a_quarter_of_its_interval_either_way():
    shortest, longest = BoundRngDouble(0), BoundRngDouble(1)
    assert (watch_poll_timeout(2.0, shortest), watch_poll_timeout(2.0, longest)) == (1.5, 2.5)
    assert shortest.asked == longest.asked == (0.75, 1.25)
    assert all(1.5 <= watch_poll_timeout(2.0) <= 2.5 for _ in range(100))


def test_an_output_gone_from_the_store_is_listed_without_a_url(gw, caplog):
    md = gw.key("g-gone")
    job = submit(gw, md)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    key = result_key(job.id, 1, "image.png")  # never stored: lost, or removed by hand
    gw.db(attempts.finish_job, attempt, output_keys={"image": key})

    got = gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)

    [image] = got.outputs.objects
    assert (image.object_key, image.url, image.HasField("url_expires_at")) == (key, "", False)
    assert any(r.getMessage() == "output object missing" and r.key == key for r in caplog.records)


def test_delete_refusals_name_the_job_and_its_state(gw):
    md = gw.key("d-refused")
    job = submit(gw, md)
    for job_id, code, details in [
            (job.id, grpc.StatusCode.FAILED_PRECONDITION, f"job {job.id} is QUEUED; cancel it before deleting"),
            (MISSING_JOB_ID, grpc.StatusCode.NOT_FOUND, f"job {MISSING_JOB_ID} not found")]:
        with pytest.raises(grpc.RpcError) as err:
            gw.stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id), metadata=md)
        assert (err.value.code(), err.value.details()) == (code, details)


def test_a_watch_of_a_job_deleted_under_it_ends_at_once_even_when_the_jobs_last_event_was_lost(make_gateway,
                                                                                               loop_thread):
    gw = make_gateway(watch_poll_interval_s=60)  # only an event can end the watch within the deadline
    md = gw.key("d-watched")
    job = submit(gw, md)
    watch = Watcher(gw, md, job.id)
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.db(attempts.mark_cancelled, attempt)  # the worker's "state" event never reaches the gateway
    published = next_event(gw, loop_thread, job.id)

    gw.stub.DeleteJob(pb.DeleteJobRequest(job_id=job.id), metadata=md)

    watch.thread.join(TIMEOUT)
    assert not watch.thread.is_alive(), "the watch did not end"
    assert watch.call.code() == grpc.StatusCode.NOT_FOUND
    assert [s.state for s in watch.snapshots] == [pb.JOB_STATE_QUEUED]
    assert published.result(TIMEOUT) == {"type": "deleted"}  # what every subscriber of the job is told


def test_delete_removes_the_row_and_every_object(gw):
    md = gw.key("d-objects")
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(edit=pb.EditParams(image=png(), instruction="snow")), metadata=md)
    with pytest.raises(grpc.RpcError) as err:  # still queued: must be cancelled first
        gw.stub.DeleteJob(pb.DeleteJobRequest(job_id=job.id), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.store.put(result_key(job.id, 1, "image.png"), png(16, 16), "image/png")
    gw.db(attempts.finish_job, attempt, output_keys={"image": result_key(job.id, 1, "image.png")})
    assert [k for k in gw.objects() if job.id in k] == [f"inputs/{job.id}/image.png", f"results/{job.id}/1/image.png"]

    assert gw.stub.DeleteJob(pb.DeleteJobRequest(job_id=job.id), metadata=md).job_id == job.id
    assert [k for k in gw.objects() if job.id in k] == []
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def watches_ended(gw) -> float:
    return gw.gateway.metrics.registry.get_sample_value(
        "llada_gateway_requests_total", {"method": "WatchJob", "code": "OK"}) or 0.0


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_sdk_watch_resumes_when_the_server_ends_the_stream(gw, loop_thread):
    from client import LladaClient

    md = gw.key("w-sdk-resume")
    job = submit(gw, md)
    servicer = gw.gateway.servicer
    seen, first = [], threading.Event()

    def follow():
        with LladaClient(gw.address, md[0][1], timeout=TIMEOUT) as llada:
            for snapshot in llada.watch(job.id, timeout=TIMEOUT):
                seen.append(snapshot)
                first.set()
    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert first.wait(TIMEOUT)
    # A server going away ends open watches; the SDK re-calls WatchJob (here: on the same server).
    ended_before = watches_ended(gw)
    loop_thread.loop.call_soon_threadsafe(servicer.closing.set)
    wait_until(lambda: watches_ended(gw) > ended_before, "the open watch never ended")
    loop_thread.loop.call_soon_threadsafe(servicer.closing.clear)
    # The SDK's new stream, opened after its reconnect delay, on QUEUED again.
    wait_until(lambda: servicer.watch_slots.open("w-sdk-resume") == 1, "the SDK never watched again")
    attempt = gw.db(attempts.claim_job, job.id, WORKER, heartbeat_timeout_s=60)
    gw.db(attempts.mark_cancelled, attempt)
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    states = [s.state for s in seen]
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_CANCELLED
    assert len(states) == len(set(states))  # the resumed stream's first snapshot is not repeated
