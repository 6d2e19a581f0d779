"""The gateway on the production backends: a throwaway PostgreSQL database, Redis pub/sub events and
an S3 object store (moto's S3 server standing in for MinIO, with a distinct public endpoint)."""

import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import grpc
import pytest
import redis

from shared import attempts
from shared.db import upgrade
from client import LladaClient
from tests.gateway.images_for_tests import png
from tests.postgres_databases import throwaway_database
from shared.events import RedisEventBus
from shared.objectstore import S3ObjectStore, result_key
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="module")
def s3_endpoint():
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("moto_server not installed")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def pg(make_gateway, s3_endpoint):
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis not available: {err}")
    with throwaway_database("llada_gw_test") as url:
        upgrade(url)
        bus = RedisEventBus(REDIS_URL, prefix=f"llada-gw-test-{uuid.uuid4().hex[:8]}:")
        # Clients reach the store as "localhost", the gateway as "127.0.0.1": URLs must be signed for the former.
        store = S3ObjectStore(f"127.0.0.1:{s3_endpoint}", "testing", "testing", f"llada-gw-{uuid.uuid4().hex[:8]}",
                              public_endpoint=f"localhost:{s3_endpoint}")
        yield make_gateway(database_url=url, events=bus, store=store, max_queued_per_tenant=3)
        bus.close()


def test_submit_idempotency_isolation_and_backpressure_on_postgres(pg):
    md, other = pg.key("pg-a"), pg.key("pg-b")
    request = pb.SubmitJobRequest(request_id="pg-1", text_to_image=pb.TextToImageParams(prompt="p", width=512))
    job = pg.stub.SubmitJob(request, metadata=md)
    assert pg.stub.SubmitJob(request, metadata=md).id == job.id
    assert pg.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).queue_position == 1
    with pytest.raises(grpc.RpcError) as err:
        pg.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=other)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for _ in range(2):
        pg.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="q")), metadata=md)
    with pytest.raises(grpc.RpcError) as err:
        pg.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="r")), metadata=md)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_watch_over_redis_events_until_cancelled(pg):
    md = pg.key("pg-watch")
    job = pg.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="w")), metadata=md)
    seen, first = [], threading.Event()

    def watch():
        for snapshot in pg.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=15):
            seen.append(snapshot)
            first.set()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert first.wait(10)
    attempt = pg.db(attempts.claim_job, job.id, "pg-worker", heartbeat_timeout_s=60)
    pg.events.publish(job.id, {"type": "state"})
    assert pg.stub.CancelJob(pb.CancelJobRequest(job_id=job.id), metadata=md).state == pb.JOB_STATE_CANCELLING
    pg.db(attempts.mark_cancelled, attempt)
    pg.events.publish(job.id, {"type": "state"})
    thread.join(15)
    assert not thread.is_alive()
    states = [s.state for s in seen]
    assert states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_CANCELLED
    assert states == sorted(states)


def test_s3_inputs_presigned_public_urls_and_delete(pg, s3_endpoint, tmp_path):
    md = pg.key("pg-s3")
    job = pg.stub.SubmitJob(pb.SubmitJobRequest(edit=pb.EditParams(image=png(), instruction="blue")), metadata=md)
    input_key = f"inputs/{job.id}/image.png"
    assert pg.store.exists(input_key)
    attempt = pg.db(attempts.claim_job, job.id, "pg-worker", heartbeat_timeout_s=60)
    result = png(8, 8, (0, 0, 255))
    pg.store.put(result_key(job.id, 1, "image.png"), result, "image/png")
    pg.db(attempts.finish_job, attempt, output_keys={"image": result_key(job.id, 1, "image.png")})

    done = pg.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md)
    url = urllib.parse.urlsplit(done.outputs.objects[0].url)
    assert url.netloc == f"localhost:{s3_endpoint}"  # signed for the public endpoint, not 127.0.0.1
    assert "X-Amz-Signature" in url.query
    with LladaClient(pg.address, md[0][1], timeout=10) as llada:
        (saved,) = llada.download(job.id, tmp_path)
    assert saved.read_bytes() == result

    pg.stub.DeleteJob(pb.DeleteJobRequest(job_id=job.id), metadata=md)
    assert not pg.store.exists(input_key) and not pg.store.exists(result_key(job.id, 1, "image.png"))
