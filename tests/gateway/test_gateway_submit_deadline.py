"""A SubmitJob whose caller goes away (its deadline expires) while the job is being inserted leaves a
complete job — row, input objects, queue message — or nothing at all, never a row without its inputs."""

import threading
import time

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared import repository as repo
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

TIMEOUT = 20


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


def test_an_insert_outliving_its_caller_leaves_a_complete_job(make_gateway, monkeypatch):
    gw = make_gateway()
    md = gw.key("deadline-ok")
    held = HeldInsertDouble(monkeypatch)
    _submit_until_the_deadline_expires_mid_insert(gw, md, held, "late-1")
    held.release.set()
    wait_until(lambda: gw.queue.sent, "the job was never enqueued")
    (job,) = gw.db(repo.list_jobs, "deadline-ok")[0]
    assert job.state == "QUEUED" and gw.queue.sent == [(job.id, 0)]
    assert gw.objects() == [job.input_keys["image"]]  # its input is still there
    # The client's retry is answered with that job, whose input is intact.
    again = gw.stub.SubmitJob(understand("late-1"), metadata=md, timeout=TIMEOUT)
    assert again.id == job.id and gw.objects() == [job.input_keys["image"]]
    assert gw.job_count() == 1 and len(gw.queue.sent) == 1


def test_an_insert_failing_after_its_caller_left_leaves_nothing(make_gateway, monkeypatch):
    gw = make_gateway()
    md = gw.key("deadline-fail")
    held = HeldInsertDouble(monkeypatch, fail=RuntimeError("the database went away"))
    _submit_until_the_deadline_expires_mid_insert(gw, md, held, "late-2")
    held.release.set()
    wait_until(lambda: gw.objects() == [], "the input of the failed insert was never removed")
    assert gw.job_count() == 0 and gw.queue.sent == []
