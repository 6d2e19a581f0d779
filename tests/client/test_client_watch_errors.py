"""The SDK's watch and wait on their error paths (sync and asyncio), against a scripted gateway double on
loopback: only UNAVAILABLE is retried, a resumed stream never repeats a snapshot, `wait` honours its timeout
and returns on every terminal state; a call without an answer ends at the client's timeout."""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures

import grpc
import pytest

from client import AsyncLladaClient, LladaClient, LladaError
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from tests.deadlines import deadline_s

JOB = "00000000-0000-4000-8000-000000000001"


def snap(state: int, step: int = 0) -> pb.Job:
    return pb.Job(id=JOB, state=state, progress=pb.Progress(step=step, total=4))


RUNNING = [snap(pb.JOB_STATE_RUNNING, s) for s in range(3)]


class ScriptedGatewayDouble(pb_grpc.JobServiceServicer):
    """Each WatchJob call plays the next script: snapshots to send, then an abort code, "hang" (until the
    caller's deadline) or nothing (the stream ends)."""

    def __init__(self, scripts):
        self.scripts = list(scripts)
        self.calls = 0

    def GetJob(self, request, context):  # an answer that never comes: the caller's deadline decides
        done = threading.Event()
        context.add_callback(done.set)
        done.wait(30)
        return pb.Job()

    def WatchJob(self, request, context):
        snapshots, ending = self.scripts[min(self.calls, len(self.scripts) - 1)]
        self.calls += 1
        yield from snapshots
        if ending == "hang":
            done = threading.Event()
            context.add_callback(done.set)
            done.wait(30)
        elif ending is not None:
            context.abort(ending, f"scripted {ending.name}")


@pytest.fixture
def gateway_double(monkeypatch):
    monkeypatch.setattr("client.sync_client.WATCH_RECONNECT_DELAY_S", 0.01)
    monkeypatch.setattr("client.async_client.WATCH_RECONNECT_DELAY_S", 0.01)
    servers = []

    def serve(*scripts) -> tuple[str, ScriptedGatewayDouble]:
        double = ScriptedGatewayDouble(scripts)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_JobServiceServicer_to_server(double, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}", double
    yield serve
    for server in servers:
        server.stop(0)


def watch_sync(address: str, **kwargs) -> list[pb.Job]:
    with LladaClient(address, api_key="") as client:
        return list(client.watch(JOB, **kwargs))


def watch_async(address: str, **kwargs) -> list[pb.Job]:
    async def run():
        async with AsyncLladaClient(address, api_key="") as client:
            return [job async for job in client.watch(JOB, **kwargs)]
    return asyncio.run(run())


WATCHERS = [pytest.param(watch_sync, id="sync"), pytest.param(watch_async, id="async")]


@pytest.mark.parametrize("watch", WATCHERS)
def test_unavailable_is_retried_and_the_resumed_stream_repeats_nothing(gateway_double, watch):
    done = snap(pb.JOB_STATE_SUCCEEDED, 4)
    address, double = gateway_double(
        (RUNNING[:2], grpc.StatusCode.UNAVAILABLE),
        ([RUNNING[1], RUNNING[2]], grpc.StatusCode.UNAVAILABLE),  # resumes with the snapshot already seen
        ([RUNNING[2], done], None),
    )
    assert watch(address) == [RUNNING[0], RUNNING[1], RUNNING[2], done]
    assert double.calls == 3


@pytest.mark.parametrize("watch", WATCHERS)
@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT])
def test_any_other_code_ends_the_watch_at_once_with_that_code(gateway_double, watch, code):
    address, double = gateway_double((RUNNING[:1], code), ([snap(pb.JOB_STATE_SUCCEEDED)], None))
    with pytest.raises(LladaError) as err:
        watch(address)
    assert err.value.code == code.name and double.calls == 1


@pytest.mark.parametrize("watch", WATCHERS)
def test_a_resumed_streams_repeated_snapshot_is_skipped_and_the_same_stream_goes_on(gateway_double, watch):
    done = snap(pb.JOB_STATE_SUCCEEDED, 4)
    address, double = gateway_double(
        (RUNNING[:2], grpc.StatusCode.UNAVAILABLE),
        ([RUNNING[1], RUNNING[2], done], None),
    )
    assert watch(address) == [RUNNING[0], RUNNING[1], RUNNING[2], done]
    assert double.calls == 2  # no third stream


@pytest.mark.parametrize("watch", WATCHERS)
def test_a_snapshot_restarts_the_count_of_breaks(gateway_double, watch):
    from client.sync_client import WATCH_RECONNECTS

    done = snap(pb.JOB_STATE_SUCCEEDED, 4)
    empty_breaks = [([], grpc.StatusCode.UNAVAILABLE)] * (WATCH_RECONNECTS - 1)
    address, double = gateway_double((RUNNING[:1], grpc.StatusCode.UNAVAILABLE), *empty_breaks, ([done], None))
    # A snapshot, then WATCH_RECONNECTS breaks in a row counting the first: still within the allowance.
    assert watch(address) == [RUNNING[0], done]
    assert double.calls == WATCH_RECONNECTS + 1


@pytest.mark.parametrize("watch", WATCHERS)
def test_a_stream_that_keeps_breaking_gives_up_after_the_reconnects(gateway_double, watch):
    from client.sync_client import WATCH_RECONNECTS

    address, double = gateway_double(([], grpc.StatusCode.UNAVAILABLE))
    with pytest.raises(LladaError, match="kept breaking") as err:
        watch(address)
    assert err.value.code == "UNAVAILABLE" and double.calls == WATCH_RECONNECTS + 1


@pytest.mark.parametrize("watch", WATCHERS)
def test_the_timeout_bounds_the_whole_watch(gateway_double, watch):
    """The stream hangs after one snapshot: without the timeout this test would wait for the scripted 30 s."""
    address, _ = gateway_double((RUNNING[:1], "hang"))
    with pytest.raises(LladaError) as err:
        watch(address, timeout=0.5)
    assert err.value.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("state", [pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED,
                                   pb.JOB_STATE_EXPIRED])
def test_wait_returns_on_every_terminal_state(gateway_double, state):
    end = snap(state)
    address, _ = gateway_double((RUNNING[:2] + [end, snap(pb.JOB_STATE_RUNNING, 9)], "hang"))
    seen = []
    with LladaClient(address, api_key="") as client:
        assert client.wait(JOB, progress=seen.append, timeout=10) == end
    assert seen == RUNNING[:2] + [end]

    async def run():
        async with AsyncLladaClient(address, api_key="") as client:
            return await client.wait(JOB, timeout=10)
    assert asyncio.run(run()) == end


def test_wait_raises_deadline_exceeded_when_the_job_does_not_end_in_time(gateway_double):
    address, _ = gateway_double((RUNNING[:1], "hang"), (RUNNING[:1], "hang"))
    with LladaClient(address, api_key="") as client, pytest.raises(LladaError) as err:
        client.wait(JOB, timeout=0.5)
    assert err.value.code == "DEADLINE_EXCEEDED"

    async def run():
        async with AsyncLladaClient(address, api_key="") as client:
            return await asyncio.wait_for(client.wait(JOB, timeout=0.5), deadline_s(30))  # the test's own bound
    with pytest.raises(LladaError) as err:
        asyncio.run(run())
    assert err.value.code == "DEADLINE_EXCEEDED"


def test_a_call_that_gets_no_answer_ends_at_the_clients_timeout(gateway_double):
    address, _ = gateway_double(([], None))
    with LladaClient(address, api_key="", timeout=0.3) as client, pytest.raises(LladaError) as err:
        client.get(JOB)
    assert err.value.code == "DEADLINE_EXCEEDED"

    async def run():
        async with AsyncLladaClient(address, api_key="", timeout=0.3) as client:
            return await asyncio.wait_for(client.get(JOB), deadline_s(30))
    with pytest.raises(LladaError) as err:
        asyncio.run(run())
    assert err.value.code == "DEADLINE_EXCEEDED"
