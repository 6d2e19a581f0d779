"""The service around JobService: health checking, reflection, metrics, TLS, and what it imports."""

import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from client import LladaClient, LladaError
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from tests.tls_certs import self_signed


def test_health_answers_serving_without_an_api_key(gw):
    health = health_pb2_grpc.HealthStub(gw.channel)
    for service in ("", "llada.serve.v1.JobService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_job_service(gw):
    db = ProtoReflectionDescriptorDatabase(gw.channel)
    assert "llada.serve.v1.JobService" in db.get_services()
    assert "grpc.health.v1.Health" in db.get_services()
    proto = db.FindFileContainingSymbol("llada.serve.v1.JobService")
    assert proto.name == "llada/serve/v1/jobs.proto"
    assert {m.name for m in proto.service[0].method} == {"SubmitJob", "GetJob", "ListJobs", "WatchJob",
                                                         "CancelJob", "DeleteJob"}


def test_metrics_count_requests_by_method_and_code_and_jobs_by_state(make_gateway):
    gw = make_gateway()
    md = gw.key("m")
    registry = gw.gateway.metrics.registry
    gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p")), metadata=md)
    with pytest.raises(grpc.RpcError):
        gw.stub.GetJob(pb.GetJobRequest(job_id="00000000-0000-4000-8000-000000000000"), metadata=md)
    with pytest.raises(grpc.RpcError):
        gw.stub.ListJobs(pb.ListJobsRequest())  # no key

    def count(method, code):
        # The status reaches the client before the server-side wrapper records it: allow a moment.
        for _ in range(100):
            value = registry.get_sample_value("llada_gateway_requests_total", {"method": method, "code": code})
            if value is not None:
                return value
            time.sleep(0.01)
        return None

    assert count("SubmitJob", "OK") == 1
    assert count("GetJob", "NOT_FOUND") == 1
    assert count("ListJobs", "UNAUTHENTICATED") == 1
    assert registry.get_sample_value("llada_gateway_request_seconds_count", {"method": "SubmitJob"}) == 1
    assert registry.get_sample_value("llada_jobs", {"state": "QUEUED"}) == 1


def test_jobs_by_state_reports_every_state_zeros_included_and_nothing_when_the_count_fails():
    from prometheus_client import CollectorRegistry

    from services.gateway.metrics import JobsByStateCollector
    from shared.jobs import JobState

    registry = CollectorRegistry()
    registry.register(JobsByStateCollector(lambda: {"RUNNING": 2}))
    assert {state.value: registry.get_sample_value("llada_jobs", {"state": state.value}) for state in JobState} == {
        state.value: 2.0 if state is JobState.RUNNING else 0.0 for state in JobState}

    def broken():
        raise OSError("database unreachable")

    failing = CollectorRegistry()
    failing.register(JobsByStateCollector(broken))
    assert failing.get_sample_value("llada_jobs", {"state": "QUEUED"}) is None  # unknown, not zero


def test_tls_when_certificates_are_configured(make_gateway, tmp_path):
    cert_file, key_file = self_signed(tmp_path)
    gw = make_gateway(tls_cert_file=cert_file, tls_key_file=key_file)
    key = gw.key("tls")[0][1]
    with LladaClient(gw.address, key, root_certificates=cert_file, timeout=5) as llada:
        job = llada.submit_text_to_image("over TLS")
        assert llada.get(job.id).state == pb.JOB_STATE_QUEUED
    with LladaClient(gw.address, key, timeout=2) as plaintext, pytest.raises(LladaError) as err:
        plaintext.get(job.id)
    assert err.value.code == "UNAVAILABLE"


@pytest.mark.slow
def test_gateway_and_client_import_only_what_they_may():
    probe = (
        "import sys, services.gateway.__main__, services.gateway.admin, shared.queue, shared.events\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'workers', 'ray', 'diffusers'))\n"
        "assert not bad, bad\n"
        "import client, client.cli, client.cli_commands\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)
    # The SDK alone: grpc and the generated stubs, no database, settings or service code.
    client_probe = (
        "import sys, client, client.cli, client.cli_commands\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'pydantic', 'celery', 'torch',"
        " 'services', 'workers', 'minio', 'redis') or m in ('shared.settings', 'shared.repository'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", client_probe], check=True)


def test_a_watch_counts_ok_when_its_job_ended_and_cancelled_when_its_client_left(make_gateway):
    """The SDK closes its stream as soon as it holds the terminal snapshot, racing the server's own end of it:
    that is still a watch that ended because its job did. A client that leaves before the end is CANCELLED."""
    from client import LladaClient
    from shared import attempts

    gw = make_gateway()
    registry = gw.gateway.metrics.registry
    key = dict(gw.key("watcher"))["x-api-key"]

    def count(code):
        return registry.get_sample_value("llada_gateway_requests_total", {"method": "WatchJob", "code": code}) or 0

    with LladaClient(gw.address, api_key=key) as llada:
        for _ in range(10):  # the job ends while it is watched, each time
            job = llada.submit_text_to_image("a fox")
            attempt = gw.db(attempts.claim_job, job.id, "w", heartbeat_timeout_s=60)
            watching = llada.watch(job.id, timeout=10)
            assert next(watching).state == pb.JOB_STATE_RUNNING
            gw.db(attempts.finish_job, attempt, output_keys={})
            gw.events.publish(job.id, {"type": "state", "state": "SUCCEEDED"})
            assert next(watching).state == pb.JOB_STATE_SUCCEEDED
            watching.close()  # as wait() does once it holds the terminal snapshot
        left = llada.submit_text_to_image("a fox nobody waits for")
        with pytest.raises(Exception):
            llada.wait(left.id, timeout=0.5)  # the client's deadline ends the stream before the job does
    deadline = time.monotonic() + 5
    while count("OK") + count("CANCELLED") + count("DEADLINE_EXCEEDED") < 11 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert count("OK") == 10
    assert count("CANCELLED") + count("DEADLINE_EXCEEDED") == 1


@pytest.mark.parametrize("last, code", [(pb.JOB_STATE_SUCCEEDED, "OK"), (pb.JOB_STATE_RUNNING, "CANCELLED")])
def test_a_stream_cancelled_after_its_terminal_snapshot_counts_ok_and_before_it_cancelled(last, code):
    """The interceptor's rule, on a stream the client cancels while the server is still after its last message."""
    import asyncio

    from prometheus_client import CollectorRegistry

    from services.gateway.metrics import GatewayMetrics, MetricsInterceptor

    metrics = GatewayMetrics(CollectorRegistry())

    async def watch(request, context):
        yield pb.Job(state=last)
        await asyncio.Event().wait()  # the server has more to do when the client goes

    handler = grpc.unary_stream_rpc_method_handler(watch)

    async def run():
        async def continuation(details):
            return handler
        details = type("Details", (), {"method": "/llada.serve.v1.JobService/WatchJob"})()
        wrapped = await MetricsInterceptor(metrics).intercept_service(continuation, details)
        stream = wrapped.unary_stream(pb.WatchJobRequest(), None)
        consumer = asyncio.ensure_future(anext(stream))
        assert (await consumer).state == last
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        pending.cancel()  # what grpc.aio does to the handler when its client cancels
        with pytest.raises(asyncio.CancelledError):
            await pending

    asyncio.run(run())
    assert metrics.registry.get_sample_value("llada_gateway_requests_total",
                                             {"method": "WatchJob", "code": code}) == 1
