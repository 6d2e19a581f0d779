"""Open watches are bounded: per tenant (max_watches_per_tenant, RESOURCE_EXHAUSTED beyond it, the slot
released however the stream ends) and per process (grpc.aio's maximum_concurrent_rpcs)."""

import time

import grpc
import pytest

from shared import repository as repo
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.deadlines import deadline_s

TIMEOUT = deadline_s(10)


def submit(gw, md) -> pb.Job:
    return gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p")), metadata=md)


def open_watch(gw, md, job_id, timeout=TIMEOUT):
    """A watch stream that has sent its first snapshot (so it is open on the server)."""
    stream = gw.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=md, timeout=timeout)
    assert next(stream).id == job_id
    return stream


def refused_watch(gw, md, job_id) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        next(gw.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=md, timeout=TIMEOUT))
    return err.value


def eventually_open(gw, md, job_id):
    """The slot of a stream that ended is released on the server a moment later: retry until it is."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return open_watch(gw, md, job_id)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_a_tenant_beyond_its_watch_limit_is_refused_and_ended_watches_free_their_slots(make_gateway):
    gw = make_gateway(max_watches_per_tenant=2)
    md, other = gw.key("watch-a"), gw.key("watch-b")
    job, spare = submit(gw, md), submit(gw, md)
    first, second = open_watch(gw, md, job.id), open_watch(gw, md, job.id)

    err = refused_watch(gw, md, job.id)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "watches" in err.details()
    open_watch(gw, other, submit(gw, other).id).cancel()  # another tenant is not affected

    first.cancel()  # ended by the client
    third = eventually_open(gw, md, job.id)
    second.cancel()
    ending = eventually_open(gw, md, spare.id)
    assert refused_watch(gw, md, job.id).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Ended by the job's end: the stream finishes on its own and gives its slot back.
    gw.db(repo.request_cancel, "watch-a", spare.id)
    assert [s.state for s in ending] == [pb.JOB_STATE_CANCELLED]
    fourth = eventually_open(gw, md, job.id)
    third.cancel()
    fourth.cancel()


@pytest.mark.slow
def test_a_watch_ended_by_its_deadline_gives_its_slot_back(make_gateway):
    gw = make_gateway(max_watches_per_tenant=1)
    md = gw.key("watch-deadline")
    job = submit(gw, md)
    # Long enough for the first snapshot on a loaded machine; while the stream is open it holds the slot.
    stream = open_watch(gw, md, job.id, timeout=3)
    assert refused_watch(gw, md, job.id).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as err:
        list(stream)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    eventually_open(gw, md, job.id).cancel()


def test_the_process_serves_at_most_max_concurrent_rpcs(make_gateway):
    gw = make_gateway(max_concurrent_rpcs=2)
    md = gw.key("rpc-cap")
    job = submit(gw, md)
    watches = [open_watch(gw, md, job.id) for _ in range(2)]
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md, timeout=TIMEOUT)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for watch in watches:
        watch.cancel()
