"""How both SDK clients connect (client.sync_client, client.async_client): over TLS to a server whose CA they are
given (and not to one they cannot verify), with the configured message size limit, and, for the asyncio client, as
another caller over the same channel (`with_api_key`). Against a recording gateway double on loopback."""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import pytest

from client import AsyncLladaClient, LladaClient, LladaError
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from tests.tls_certs import self_signed

JOB = "00000000-0000-4000-8000-000000000001"
BIG = 64 * 1024  # a reply this large passes a 1 MiB limit, not a 16 KiB one


class RecordingGatewayDouble(pb_grpc.JobServiceServicer):
    """Answers GetJob with a job carrying BIG bytes of text, recording each call's API key."""

    def __init__(self):
        self.keys: list[str | None] = []

    def GetJob(self, request, context):
        self.keys.append(dict(context.invocation_metadata()).get("x-api-key"))
        return pb.Job(id=request.job_id, outputs=pb.JobOutputs(text="x" * BIG))


@pytest.fixture
def tls_gateway(tmp_path):
    cert, key = self_signed(tmp_path)
    double = RecordingGatewayDouble()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_JobServiceServicer_to_server(double, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key.read_bytes(),
                                                                               cert.read_bytes())]))
    server.start()
    yield f"127.0.0.1:{port}", cert, double
    server.stop(0)


def test_both_clients_speak_tls_to_a_server_whose_ca_they_are_given(tls_gateway):
    address, cert, double = tls_gateway
    with LladaClient(address, "llada_sync-key-000000000000", root_certificates=cert, timeout=10) as llada:
        assert llada.get(JOB).id == JOB

    async def run():
        async with AsyncLladaClient(address, "llada_async-key-00000000000", root_certificates=cert.read_bytes(),
                                    timeout=10) as llada:
            return await llada.get(JOB)
    assert asyncio.run(run()).id == JOB
    assert double.keys == ["llada_sync-key-000000000000", "llada_async-key-00000000000"]


def test_tls_to_a_server_it_cannot_verify_fails_and_plain_text_is_not_tried(tls_gateway):
    address, _, double = tls_gateway
    with LladaClient(address, "k", tls=True, timeout=5) as llada, pytest.raises(LladaError) as err:
        llada.get(JOB)  # the system roots do not know the test CA
    assert err.value.code == "UNAVAILABLE" and double.keys == []


def test_the_message_size_limit_is_the_configured_one(tls_gateway):
    address, cert, _ = tls_gateway
    with LladaClient(address, "k", root_certificates=cert, timeout=10, max_message_bytes=16 * 1024) as small:
        with pytest.raises(LladaError) as err:
            small.get(JOB)
    assert err.value.code == "RESOURCE_EXHAUSTED"

    async def run():
        async with AsyncLladaClient(address, "k", root_certificates=cert, timeout=10,
                                    max_message_bytes=16 * 1024) as llada:
            return await llada.get(JOB)
    with pytest.raises(LladaError) as err:
        asyncio.run(run())
    assert err.value.code == "RESOURCE_EXHAUSTED"


def test_another_caller_over_the_same_channel_sends_its_own_key_or_none(tls_gateway):
    address, cert, double = tls_gateway

    async def run():
        async with AsyncLladaClient(address, "llada_front-door-key-00000", root_certificates=cert,
                                    timeout=10) as front:
            await front.with_api_key("llada_caller-key-00000000000").get(JOB)
            await front.with_api_key("").get(JOB)
            await front.with_api_key(None).get(JOB)
            await front.get(JOB)  # the original keeps its own
    asyncio.run(run())
    assert double.keys == ["llada_caller-key-00000000000", None, None, "llada_front-door-key-00000"]
