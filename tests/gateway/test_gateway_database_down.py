"""With its database unreachable the gateway answers UNAVAILABLE — retryable — with a message that shows
neither the SQL nor the host, and stores nothing (a Postgres URL on a closed loopback port; a SQLite
path that cannot be opened)."""

import socket

import grpc
import pytest

from tests.gateway.images_for_tests import png
from tests.gateway.queue_double import QueueProducerDouble
from services.gateway.server import start_gateway
from services.gateway.servicer import GatewayDeps
from shared.db import make_engine, session_factory
from shared.events import EmbeddedEventBus
from shared.objectstore import LocalObjectStore
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from shared.settings import Settings

API_KEY = "llada_test-key-for-an-unreachable-database"  # the built-in key: auth needs no database
JOB_ID = "00000000-0000-0000-0000-000000000000"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on leaving: nothing listens there


@pytest.fixture(params=["postgres", "sqlite"])
def unreachable(request, tmp_path, loop_thread):
    if request.param == "postgres":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/jobs"
    else:
        (tmp_path / "jobs.db").mkdir()  # a folder where the database file should be
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
    settings = Settings(data_dir=tmp_path, database_url=url, metrics_port=0, default_api_key=API_KEY)
    store = LocalObjectStore(tmp_path / "objects")
    queue = QueueProducerDouble()
    deps = GatewayDeps(settings=settings, sessions=session_factory(make_engine(url)), store=store,
                       events=EmbeddedEventBus(tmp_path / "events.db"), enqueue=queue)
    gateway = loop_thread.run(start_gateway(deps, listen="127.0.0.1:0"))
    channel = grpc.insecure_channel(f"127.0.0.1:{gateway.port}")
    yield pb_grpc.JobServiceStub(channel), store, queue
    channel.close()
    loop_thread.run(gateway.stop(0))


CALLS = [
    ("SubmitJob", pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="a fox"))),
    ("SubmitJob", pb.SubmitJobRequest(understand=pb.UnderstandParams(image=png(), question="What is it?"))),
    ("GetJob", pb.GetJobRequest(job_id=JOB_ID)),
    ("ListJobs", pb.ListJobsRequest()),
    ("CancelJob", pb.CancelJobRequest(job_id=JOB_ID)),
]


@pytest.mark.parametrize("method, request_", CALLS, ids=["submit", "submit with image", "get", "list", "cancel"])
def test_every_call_answers_unavailable_without_details(unreachable, method, request_):
    stub, store, queue = unreachable
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request_, metadata=(("x-api-key", API_KEY),), timeout=20)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    details = err.value.details()
    assert "retry" in details
    assert not any(word in details.lower() for word in ("select", "insert", "127.0.0.1", "sqlite", "psycopg"))
    assert list(store.root.rglob("*.*")) == [] and queue.sent == []


def test_a_watch_answers_unavailable_too(unreachable):
    stub, _, _ = unreachable
    with pytest.raises(grpc.RpcError) as err:
        list(stub.WatchJob(pb.WatchJobRequest(job_id=JOB_ID), metadata=(("x-api-key", API_KEY),), timeout=20))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
