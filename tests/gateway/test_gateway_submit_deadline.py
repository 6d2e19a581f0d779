"""A SubmitJob whose caller goes away (its deadline expires) while the job is being inserted leaves a
complete job — row, input objects, queue message — or nothing at all, never a row without its inputs."""

import asyncio
import logging
import threading
import time

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared import repository as repo
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.deadlines import deadline_s

TIMEOUT = deadline_s(20)


class HeldInsertDouble:
    """Wraps repository.submit_job: holds each call in its thread until `release` is set, then runs
    the real insert — or raises `fail` instead."""

    def __init__(self, monkeypatch, fail: Exception | None = None):
        self.entered = threading.Event()
        self.release = threading.Event()
        real = repo.submit_job

        def submit_job(*args, **kwargs):
            self.entered.set()
            assert self.release.wait(TIMEOUT), "the test never released the insert"
            if fail is not None:
                raise fail
            return real(*args, **kwargs)
        monkeypatch.setattr(repo, "submit_job", submit_job)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def understand(request_id: str) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(request_id=request_id,
                               understand=pb.UnderstandParams(image=png(), question="What is shown?"))


def cancelled_submits(gw) -> float:
    return gw.gateway.metrics.registry.get_sample_value(
        "llada_gateway_requests_total", {"method": "SubmitJob", "code": "CANCELLED"}) or 0.0


def _submit_until_the_deadline_expires_mid_insert(gw, md, held: HeldInsertDouble, request_id: str):
    before = cancelled_submits(gw)
    call = gw.stub.SubmitJob.future(understand(request_id), metadata=md, timeout=0.5)
    assert held.entered.wait(TIMEOUT)  # the input is uploaded, the insert under way
    with pytest.raises(grpc.RpcError) as err:
        call.result()
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway has seen its caller go away (the RPC ended CANCELLED) before the insert goes on.
    wait_until(lambda: cancelled_submits(gw) > before, "the gateway never noticed the deadline")
    assert len(gw.objects()) == 1


def submits_ended(gw, loop_thread) -> None:
    """Until no submit task is left and the callbacks of their ends (the outcome's log line) have run."""
    wait_until(lambda: not gw.gateway.servicer._submits, "a submit task never ended")
    loop_thread.run(asyncio.sleep(0))  # after the callbacks queued with the last task's end


def outcome_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "llada.gateway" and "after its caller went away" in r.getMessage()]


def test_an_insert_outliving_its_caller_leaves_a_complete_job(make_gateway, loop_thread, monkeypatch, caplog):
    gw = make_gateway()
    md = gw.key("deadline-ok")
    held = HeldInsertDouble(monkeypatch)
    caplog.set_level(logging.INFO, logger="llada.gateway")
    _submit_until_the_deadline_expires_mid_insert(gw, md, held, "late-1")
    held.release.set()
    wait_until(lambda: gw.queue.sent, "the job was never enqueued")
    submits_ended(gw, loop_thread)
    (job,) = gw.db(repo.list_jobs, "deadline-ok")[0]
    [logged] = outcome_records(caplog)
    assert (logged.levelname, logged.getMessage(), logged.job_id) == (
        "INFO", "submit completed after its caller went away", job.id)
    assert job.state == "QUEUED" and gw.queue.sent == [(job.id, 0)]
    assert gw.objects() == [job.input_keys["image"]]  # its input is still there
    # The client's retry is answered with that job, whose input is intact.
    again = gw.stub.SubmitJob(understand("late-1"), metadata=md, timeout=TIMEOUT)
    assert again.id == job.id and gw.objects() == [job.input_keys["image"]]
    assert gw.job_count() == 1 and len(gw.queue.sent) == 1


@pytest.mark.parametrize("failure, logged", [
    (RuntimeError("the database went away"),
     [("ERROR", "submit failed after its caller went away; nothing was stored")]),
    (repo.QueueFull("tenant", 3), []),  # a refusal, not a failure: nobody needs to hear of it
])
def test_an_insert_failing_after_its_caller_left_leaves_nothing(make_gateway, loop_thread, monkeypatch, caplog,
                                                                failure, logged):
    gw = make_gateway()
    md = gw.key("deadline-fail")
    held = HeldInsertDouble(monkeypatch, fail=failure)
    caplog.set_level(logging.INFO, logger="llada.gateway")
    _submit_until_the_deadline_expires_mid_insert(gw, md, held, "late-2")
    held.release.set()
    wait_until(lambda: gw.objects() == [], "the input of the failed insert was never removed")
    assert gw.job_count() == 0 and gw.queue.sent == []
    submits_ended(gw, loop_thread)
    assert [(r.levelname, r.getMessage()) for r in outcome_records(caplog)] == logged
    assert all(r.exc_info[1] is failure for r in outcome_records(caplog))
