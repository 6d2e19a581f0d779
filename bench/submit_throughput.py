"""The gateway's unary calls with concurrent clients, next to a bare gRPC call as the floor, over a deep queue.

    .venv/bin/python bench/submit_throughput.py [--calls 400] [--clients 8] [--backlog 0 100000 1000000]
        [--replicas 1 2 4] [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis-url redis://127.0.0.1:6379/0]

The production path on loopback: a throwaway PostgreSQL database per backlog (created, migrated, dropped
here), the Celery producer on a Redis broker with a queue name of its own (no worker consumes it; its keys are
deleted afterwards), Redis pub/sub events, and the gateway wired by `deps_from_settings` as in production.

For each `--backlog N`, N queued jobs of other tenants are put into `jobs` by SQL first (one bulk statement
with the per-row triggers off, then `python -m shared.db recount`'s rebuild of the counts), all at the
bench's priority, so every job the bench submits queues behind them. Then, with the gateway in this process
and `--clients` concurrent clients (one channel each), `--calls` calls of each of:
- SubmitJob: a text-to-image job, each with its own request_id as a careful client sends;
- GetJob: the last job submitted, at the back of the queue (its position is the deepest to find);
- ListJobs: the bench tenant's queued jobs, a page of 20 (each with its queue position);
- WatchJob: opened, its first snapshot read, closed;
- health Check: the cheapest unary call the server has, the floor.
Each row's ratio to the floor is what the call costs above gRPC; its ratio to the backlog-0 row is what
the depth of the queue costs. Clients and server share this process (and the GIL).

`--replicas R …` then runs R gateway processes (`python -m services.gateway`) on one database (with the
largest backlog), the clients spread over them round-robin, and prints SubmitJob and GetJob in total and per
replica. Every replica and the clients share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
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
from shared.db import make_engine, session_factory, upgrade  # noqa: E402
from shared.proto.llada.serve.v1 import jobs_pb2 as pb  # noqa: E402
from shared.queue_counts import recount_queue  # noqa: E402
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc  # noqa: E402
from shared.settings import Settings  # noqa: E402

WARMUP_PER_CLIENT = 5  # connections, pool, first Celery publish, prepared statements: not measured
CALL_TIMEOUT_S = 30
RUN_LIMIT_S = 180  # one measured side stops here, however slow the machine
REPLICA_START_S = 60
LIST_PAGE = 20
TENANT = "bench"


# The clients' event loop, one for the whole run: grpc.aio keeps its poller bound to the first loop it meets,
# so a loop per measurement (asyncio.run) leaves callbacks aimed at closed loops.
CLIENTS = asyncio.Runner()


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass
class Result:
    rate: float
    p50_ms: float
    p99_ms: float


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


async def drive(addresses: list[str], clients: int, total: int, make_call) -> Result:
    """`clients` channels (spread over `addresses`), each making its share of `total` calls one after another."""
    shares = [total // clients + (i < total % clients) for i in range(clients)]
    channels = [grpc.aio.insecure_channel(addresses[i % len(addresses)]) for i in range(clients)]
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
        wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    return Result(len(latencies) / wall, percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3)


def submit_call(api_key: str, run_id: str, submitted: list[str]):
    metadata = (("x-api-key", api_key),)

    def make(channel):
        stub = pb_grpc.JobServiceStub(channel)

        async def call(tag: str) -> None:
            request = pb.SubmitJobRequest(
                request_id=f"bench-{run_id}-{tag}",
                text_to_image=pb.TextToImageParams(prompt=f"a lighthouse at dusk, {tag}", width=512, height=512))
            job = await stub.SubmitJob(request, metadata=metadata, timeout=CALL_TIMEOUT_S)
            if job.state != pb.JOB_STATE_QUEUED or job.queue_position < 1:
                raise SystemExit(f"submit {tag}: job is {pb.JobState.Name(job.state)} at {job.queue_position}")
            submitted.append(job.id)
        return call
    return make


def get_call(api_key: str, job_id: str, least_position: int):
    metadata = (("x-api-key", api_key),)

    def make(channel):
        stub = pb_grpc.JobServiceStub(channel)

        async def call(_tag: str) -> None:
            job = await stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata, timeout=CALL_TIMEOUT_S)
            if job.queue_position < least_position:
                raise SystemExit(f"GetJob: position {job.queue_position}, expected at least {least_position}")
        return call
    return make


def list_call(api_key: str):
    metadata = (("x-api-key", api_key),)

    def make(channel):
        stub = pb_grpc.JobServiceStub(channel)

        async def call(_tag: str) -> None:
            page = await stub.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_QUEUED, page_size=LIST_PAGE),
                                       metadata=metadata, timeout=CALL_TIMEOUT_S)
            if len(page.jobs) != LIST_PAGE:
                raise SystemExit(f"ListJobs: {len(page.jobs)} jobs, expected {LIST_PAGE}")
        return call
    return make


def watch_call(api_key: str, job_id: str):
    metadata = (("x-api-key", api_key),)

    def make(channel):
        stub = pb_grpc.JobServiceStub(channel)

        async def call(_tag: str) -> None:
            stream = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata, timeout=CALL_TIMEOUT_S)
            try:
                first = await stream.read()
                if first is grpc.aio.EOF or first.id != job_id:
                    raise SystemExit("WatchJob: no first snapshot")
            finally:
                stream.cancel()
        return call
    return make


def health_call(channel):
    stub = health_pb2_grpc.HealthStub(channel)

    async def call(_tag: str) -> None:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=CALL_TIMEOUT_S)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise SystemExit(f"health check answered {reply.status}")
    return call


def load_backlog(database_url: str, libpq_url: str, n: int) -> float:
    """N queued jobs of 50 other tenants, older than anything the bench submits, in one statement; returns
    seconds. The per-row triggers are off for the bulk load (as for any bulk load): the rows carry their
    tickets, and `recount_queue` (python -m shared.db recount) sets the counts from them afterwards."""
    start = time.perf_counter()
    with psycopg.connect(libpq_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("""
            INSERT INTO jobs (id, tenant, kind, params, priority, input_keys, state, progress_step, progress_total,
                              attempts, handed_back, timings, output_keys, created_at, cancel_requested, queue_ticket)
            SELECT gen_random_uuid()::text, 'backlog-' || (g %% 50), 'TEXT_TO_IMAGE', '{"prompt": "backlog"}', 0,
                   '{}', 'QUEUED', 0, 0, 0, 0, '{}', '{}', now() - interval '1 hour' + g * interval '1 microsecond',
                   false, g
            FROM generate_series(1, %s) AS g""", (n,))
        conn.execute("SET session_replication_role = origin")
        conn.commit()
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            recount_queue(s)
        with engine.begin() as conn:  # committed: statistics taken in a rolled-back transaction are lost
            conn.exec_driver_sql("ANALYZE jobs")
    finally:
        engine.dispose()
    return time.perf_counter() - start


def make_database(admin_url: str, name: str) -> tuple[str, str]:
    """Creates database `name`; returns its SQLAlchemy and libpq URLs."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    parts = psycopg.conninfo.conninfo_to_dict(admin_url)
    base = f"{parts.get('user', 'postgres')}@{parts.get('host', '127.0.0.1')}:{parts.get('port', 5432)}/{name}"
    return f"postgresql+psycopg://{base}", f"postgresql://{base}"


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_settings(database_url: str, data_dir: str, redis_url: str, token: str) -> Settings:
    return Settings(
        data_dir=Path(data_dir), database_url=database_url, broker_url=redis_url, event_bus_url=redis_url,
        object_store_url=f"file://{data_dir}/objects", queue_name=f"{token}.jobs",
        event_channel_prefix=f"{token}:events:", metrics_port=0,
        # Backpressure is not what is measured: room for the backlog and every submit of the run.
        max_queued_per_tenant=10_000_000, max_queued_total=10_000_000)


def measure_backlog(args, n: int, run_id: str, token: str) -> dict[str, Result]:
    """One backlog size, the gateway in this process: a result per call."""
    db_name = f"llada_bench_{run_id}_{n}"
    database_url, libpq_url = make_database(args.postgres_admin_url, db_name)
    server = gateway = None
    try:
        with tempfile.TemporaryDirectory(prefix="llada-bench-") as data_dir:
            upgrade(database_url)
            loaded_s = load_backlog(database_url, libpq_url, n)
            deps = deps_from_settings(bench_settings(database_url, data_dir, args.redis_url, token))
            with deps.sessions() as s:
                api_key = repo.create_api_key(s, TENANT)
            server = ServerLoop()
            gateway = server.run(start_gateway(deps, listen="127.0.0.1:0"))
            addresses = [f"127.0.0.1:{gateway.port}"]
            submitted: list[str] = []
            results = {"SubmitJob": CLIENTS.run(drive(addresses, args.clients, args.calls,
                                                      submit_call(api_key, f"{run_id}-{n}", submitted)))}
            back = submitted[-1]
            results["GetJob"] = CLIENTS.run(drive(addresses, args.clients, args.calls, get_call(api_key, back, n + 1)))
            results["ListJobs"] = CLIENTS.run(drive(addresses, args.clients, args.calls, list_call(api_key)))
            results["WatchJob"] = CLIENTS.run(drive(addresses, args.clients, args.calls, watch_call(api_key, back)))
            results["health Check"] = CLIENTS.run(drive(addresses, args.clients, args.calls, health_call))
            with deps.sessions() as s:
                queued = repo.count_queued(s)
            expected = n + len(submitted)
            if queued != expected:
                raise SystemExit(f"backlog {n}: {queued} jobs QUEUED, expected {expected}")
            print(f"  backlog {n}: loaded in {loaded_s:.1f} s; {queued} queued at the end", file=sys.stderr)
    finally:
        if gateway is not None:
            server.run(gateway.stop(0))
        if server is not None:
            server.close()
        drop_database(args.postgres_admin_url, db_name)
    return results


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_serving(address: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + REPLICA_START_S
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"gateway replica at {address} exited with {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"gateway replica at {address} not serving after {REPLICA_START_S} s")


def measure_replicas(args, replicas: int, n: int, run_id: str, token: str) -> dict[str, Result]:
    """`replicas` gateway processes on one database holding a backlog of `n`."""
    db_name = f"llada_bench_{run_id}_r{replicas}"
    database_url, libpq_url = make_database(args.postgres_admin_url, db_name)
    processes: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="llada-bench-") as data_dir:
            upgrade(database_url)
            load_backlog(database_url, libpq_url, n)
            settings = bench_settings(database_url, data_dir, args.redis_url, token)
            with deps_from_settings(settings).sessions() as s:
                api_key = repo.create_api_key(s, TENANT)
            addresses = [f"127.0.0.1:{free_port()}" for _ in range(replicas)]
            for address in addresses:
                env = {**os.environ, "LLADA_DATABASE_URL": database_url, "LLADA_BROKER_URL": args.redis_url,
                       "LLADA_EVENT_BUS_URL": args.redis_url, "LLADA_OBJECT_STORE_URL": settings.object_store_url,
                       "LLADA_DATA_DIR": data_dir, "LLADA_QUEUE_NAME": settings.queue_name,
                       "LLADA_EVENT_CHANNEL_PREFIX": settings.event_channel_prefix, "LLADA_GRPC_LISTEN": address,
                       "LLADA_METRICS_PORT": "0", "LLADA_MAX_QUEUED_PER_TENANT": "10000000",
                       "LLADA_MAX_QUEUED_TOTAL": "10000000", "LLADA_LOG_LEVEL": "WARNING"}
                processes.append(subprocess.Popen([sys.executable, "-m", "services.gateway"], cwd=ROOT, env=env,
                                                  stdout=subprocess.DEVNULL))
            for address, process in zip(addresses, processes):
                wait_serving(address, process)
            submitted: list[str] = []
            clients = max(args.clients, replicas)
            results = {"SubmitJob": CLIENTS.run(drive(addresses, clients, args.calls,
                                                      submit_call(api_key, f"{run_id}-r{replicas}", submitted)))}
            results["GetJob"] = CLIENTS.run(drive(addresses, clients, args.calls,
                                                  get_call(api_key, submitted[-1], n + 1)))
            results["health Check"] = CLIENTS.run(drive(addresses, clients, args.calls, health_call))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        drop_database(args.postgres_admin_url, db_name)
    return results


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


def print_backlog_table(by_backlog: dict[int, dict[str, Result]]) -> None:
    first = next(iter(by_backlog.values()))
    print(f"{'backlog':>9} {'call':14}{'calls/s':>9}{'p50':>10}{'p99':>10}{'floor/call':>12}{'vs backlog 0':>14}")
    for n, results in by_backlog.items():
        floor = results["health Check"].rate
        for name, r in results.items():
            print(f"{n:>9} {name:14}{r.rate:>9.1f}{r.p50_ms:>8.2f}ms{r.p99_ms:>8.2f}ms{floor / r.rate:>11.2f}×"
                  f"{first[name].rate / r.rate:>13.2f}×")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", "--submits", type=int, default=400, help="measured calls per kind (after warm-up)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, one channel each")
    parser.add_argument("--backlog", type=int, nargs="+", default=[0], help="queued jobs put in first, per run")
    parser.add_argument("--replicas", type=int, nargs="*", default=[], help="gateway processes, per run")
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 20_000:
        parser.error("--calls must be in [1, 20000]")
    if not 1 <= args.clients <= 256:
        parser.error("--clients must be in [1, 256]")
    if any(not 0 <= n <= 5_000_000 for n in args.backlog):
        parser.error("--backlog must be in [0, 5000000]")
    if any(not 1 <= r <= 8 for r in args.replicas):
        parser.error("--replicas must be in [1, 8]")

    run_id = uuid.uuid4().hex[:10]
    token = f"llada-bench-{run_id}"
    try:
        with CLIENTS:
            by_backlog = {n: measure_backlog(args, n, run_id, token) for n in args.backlog}
            by_replicas = {r: measure_replicas(args, r, max(args.backlog), run_id, token) for r in args.replicas}
    finally:
        removed = delete_redis_keys(args.redis_url, token)
    print(f"{args.calls} calls per kind from {args.clients} concurrent clients; gateway in-process on loopback, "
          f"PostgreSQL + Redis broker/events; removed {removed} Redis keys and every bench database")
    print_backlog_table(by_backlog)
    if by_replicas:
        print(f"\ngateway replicas as processes, backlog {max(args.backlog)}, clients spread round-robin")
        print(f"{'replicas':>9} {'call':14}{'calls/s':>9}{'per replica':>13}{'p50':>10}{'p99':>10}")
        for r, results in by_replicas.items():
            for name, res in results.items():
                print(f"{r:>9} {name:14}{res.rate:>9.1f}{res.rate / r:>13.1f}{res.p50_ms:>8.2f}ms{res.p99_ms:>8.2f}ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
