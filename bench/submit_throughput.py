"""SubmitJob throughput and latency with concurrent clients, next to a bare gRPC unary call as the floor.

    .venv/bin/python bench/submit_throughput.py [--submits 400] [--clients 8]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres] [--redis-url redis://127.0.0.1:6379/0]

The production path on loopback: a throwaway PostgreSQL database (created, migrated, dropped here), the
Celery producer on a Redis broker with a queue name of its own (so no worker consumes the messages and
no real queue is polluted; its keys are deleted afterwards), Redis pub/sub events, and the gateway
started in this process on 127.0.0.1 with a free port, wired by `deps_from_settings` as in production.
`--clients` concurrent clients (one channel each) share `--submits` text-to-image submits, each with its
own request_id as a careful client sends. The floor is the standard health `Check` RPC on the same
server with the same clients, the cheapest unary call the server has: the ratio is what submitting
(validation, idempotency lookup, backpressure counts, insert, enqueue, snapshot) costs above gRPC.
Clients and server share this process (and the GIL), on both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from services.gateway.server import BLOCKING_THREADS, start_gateway  # noqa: E402
from services.gateway.wiring import deps_from_settings  # noqa: E402
from shared import repository as repo  # noqa: E402
from shared.db import upgrade  # noqa: E402
from shared.proto.llada.serve.v1 import jobs_pb2 as pb  # noqa: E402
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc  # noqa: E402
from shared.settings import Settings  # noqa: E402

WARMUP_PER_CLIENT = 5  # connections, pool, first Celery publish: not measured
CALL_TIMEOUT_S = 30
RUN_LIMIT_S = 120  # the whole measured run of one side stops here, however slow the machine


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class ServerLoop:
    """The gateway's event loop in a thread of its own, with the production server's blocking-work pool."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="gateway"))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def drive(address: str, clients: int, total: int, make_call) -> tuple[float, list[float]]:
    """`clients` channels, each making its share of `total` calls one after another.
    Returns (wall seconds of the measured part, per-call latencies in seconds)."""
    shares = [total // clients + (i < total % clients) for i in range(clients)]
    channels = [grpc.aio.insecure_channel(address) for _ in range(clients)]
    latencies: list[float] = []
    try:
        calls = [make_call(ch) for ch in channels]
        await asyncio.gather(*(call(f"warmup-{i}-{n}") for i, call in enumerate(calls)
                               for n in range(WARMUP_PER_CLIENT)))

        async def client(i: int) -> None:
            for n in range(shares[i]):
                start = time.perf_counter()
                await calls[i](f"c{i}-{n}")
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(clients))), RUN_LIMIT_S)
        return time.perf_counter() - start, latencies
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


def submit_call(api_key: str, run_id: str):
    metadata = (("x-api-key", api_key),)

    def make(channel):
        stub = pb_grpc.JobServiceStub(channel)

        async def call(tag: str) -> None:
            request = pb.SubmitJobRequest(
                request_id=f"bench-{run_id}-{tag}",
                text_to_image=pb.TextToImageParams(prompt=f"a lighthouse at dusk, {tag}", width=512, height=512))
            job = await stub.SubmitJob(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            if job.state != pb.JOB_STATE_QUEUED:
                raise SystemExit(f"submit {tag}: job is {pb.JobState.Name(job.state)}, expected QUEUED")
        return call
    return make


def health_call(channel):
    stub = health_pb2_grpc.HealthStub(channel)

    async def call(_tag: str) -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise SystemExit(f"health check answered {reply.status}")
    return call


def delete_redis_keys(redis_url: str, token: str) -> int:
    """Every key naming the run's token: the queue (one list per priority step) and kombu's binding set."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"*{token}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=400, help="measured calls per side (after warm-up)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, one channel each")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    if not 1 <= args.submits <= 20_000:
        parser.error("--submits must be in [1, 20000]")
    if not 1 <= args.clients <= 256:
        parser.error("--clients must be in [1, 256]")

    run_id = uuid.uuid4().hex[:10]
    token = f"llada-bench-{run_id}"
    db_name = f"llada_bench_{run_id}"
    with psycopg.connect(args.postgres_admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    admin_url = psycopg.conninfo.conninfo_to_dict(args.postgres_admin_url)
    database_url = (f"postgresql+psycopg://{admin_url.get('user', 'postgres')}@{admin_url.get('host', '127.0.0.1')}"
                    f":{admin_url.get('port', 5432)}/{db_name}")
    server = None
    gateway = None
    try:
        with tempfile.TemporaryDirectory(prefix="llada-bench-") as data_dir:
            upgrade(database_url)
            total_jobs = args.submits + args.clients * WARMUP_PER_CLIENT
            settings = Settings(
                data_dir=Path(data_dir), database_url=database_url, broker_url=args.redis_url,
                event_bus_url=args.redis_url, object_store_url=f"file://{data_dir}/objects",
                queue_name=f"{token}.jobs", event_channel_prefix=f"{token}:events:", metrics_port=0,
                # Backpressure is not what is measured: room for every submit of the run.
                max_queued_per_tenant=total_jobs + 1, max_queued_total=total_jobs + 1)
            deps = deps_from_settings(settings)
            with deps.sessions() as s:
                api_key = repo.create_api_key(s, "bench")
            server = ServerLoop()
            gateway = server.run(start_gateway(deps, listen="127.0.0.1:0"))
            address = f"127.0.0.1:{gateway.port}"

            submit_wall, submit_lat = asyncio.run(drive(address, args.clients, args.submits,
                                                        submit_call(api_key, run_id)))
            floor_wall, floor_lat = asyncio.run(drive(address, args.clients, args.submits, health_call))

            queued = redis_queued(args.redis_url, settings.queue_name)
            with deps.sessions() as s:
                jobs = repo.count_queued(s, "bench")
    finally:
        if gateway is not None:
            server.run(gateway.stop(0))
        if server is not None:
            server.close()
        removed = delete_redis_keys(args.redis_url, token)
        with psycopg.connect(args.postgres_admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    print(f"SubmitJob vs health Check, {args.submits} calls per side from {args.clients} concurrent clients; "
          f"gateway in-process on loopback, PostgreSQL + Redis broker/events")
    print(f"{'':16}{'calls/s':>10}{'p50':>10}{'p99':>10}")
    submit_rate, floor_rate = len(submit_lat) / submit_wall, len(floor_lat) / floor_wall
    for name, rate, lat in (("SubmitJob", submit_rate, submit_lat), ("health Check", floor_rate, floor_lat)):
        print(f"{name:16}{rate:>10.1f}{percentile(lat, 50) * 1e3:>8.2f}ms{percentile(lat, 99) * 1e3:>8.2f}ms")
    print(f"{'ratio':16}{floor_rate / submit_rate:>9.2f}×"
          f"{percentile(submit_lat, 50) / percentile(floor_lat, 50):>9.2f}×"
          f"{percentile(submit_lat, 99) / percentile(floor_lat, 99):>9.2f}×"
          "   (throughput: floor / submit; latency: submit / floor)")
    print(f"checked: {jobs} jobs QUEUED in the database, {queued} messages on the broker queue "
          f"(expected {total_jobs} each); removed {removed} Redis keys and the database {db_name}")
    return 0 if jobs == queued == total_jobs else 1


def redis_queued(redis_url: str, queue_name: str) -> int:
    """Messages waiting in the queue: kombu's Redis transport keeps one list per priority step."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(client.llen(key) for key in client.scan_iter(match=f"{queue_name}*", count=1000))
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
