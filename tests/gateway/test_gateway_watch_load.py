"""500 concurrent WatchJob streams on one in-process gateway share one Redis subscription, and each sees
its job's terminal state once the test — acting as the workers — finishes the jobs and publishes their
events. Bounded: loopback only, its own channel prefix and client name, every call under a deadline."""

import asyncio
import time
import uuid

import grpc
import pytest
import redis

from shared import attempts
from shared import repository as repo
from shared.events import RedisEventBus
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc

REDIS_URL = "redis://127.0.0.1:6379/0"
WATCHES = 500
TENANT = "watch-load"
DEADLINE_S = 60  # for every stream; the whole test takes a fraction of it


def rss_mib() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024


@pytest.fixture
def redis_gateway(make_gateway):
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        pytest.skip(f"no Redis at {REDIS_URL}: {err}")
    tag = uuid.uuid4().hex[:8]
    name = f"llada-watch-load-{tag}"
    bus = RedisEventBus(REDIS_URL, prefix=f"llada-watch-load-{tag}:", client_name=name)
    # A poll far longer than the test: the terminal states can only arrive through the events.
    gw = make_gateway(events=bus, watch_poll_interval_s=600, max_watches_per_tenant=WATCHES,
                      max_concurrent_rpcs=WATCHES + 50)
    worker_bus = RedisEventBus(REDIS_URL, prefix=bus.prefix)  # the workers' publisher, unnamed
    yield gw, name, worker_bus
    worker_bus.close()
    bus.close()


def connections_named(name: str) -> int:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == name)
    finally:
        client.close()


@pytest.mark.slow
def test_500_watches_share_one_redis_subscription_and_all_see_their_end(redis_gateway):
    gw, name, worker_bus = redis_gateway
    md = gw.key(TENANT)
    job_ids = [gw.db(repo.submit_job, tenant=TENANT, request_id=None, kind="TEXT_TO_IMAGE",
                     params={"prompt": f"p{i}"}, input_keys={}).job.id for i in range(WATCHES)]
    opened, rss_before = asyncio.Event(), rss_mib()

    async def watch(stub, job_id, counts):
        states = []
        async for snapshot in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=md, timeout=DEADLINE_S):
            states.append(snapshot.state)
            if len(states) == 1:
                counts["open"] += 1
                if counts["open"] == WATCHES:
                    opened.set()
        return states

    async def scenario():
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub, counts = pb_grpc.JobServiceStub(channel), {"open": 0}
            started = time.monotonic()
            streams = [asyncio.create_task(watch(stub, job_id, counts)) for job_id in job_ids]
            await asyncio.wait_for(opened.wait(), DEADLINE_S)
            open_s = time.monotonic() - started
            connections = await asyncio.to_thread(connections_named, name)
            rss = rss_mib() - rss_before

            def finish_all():  # as the workers would: claim, finish, publish
                for job_id in job_ids:
                    attempt = gw.db(attempts.claim_job, job_id, "load-worker", heartbeat_timeout_s=600)
                    gw.db(attempts.finish_job, attempt, output_keys={}, output_text="done")
                    worker_bus.publish(job_id, {"type": "state", "state": "SUCCEEDED"})
            finishing = time.monotonic()
            await asyncio.to_thread(finish_all)
            results = await asyncio.wait_for(asyncio.gather(*streams), DEADLINE_S)
            return results, connections, open_s, time.monotonic() - finishing, rss

    results, connections, open_s, finish_s, rss = asyncio.run(scenario())
    print(f"\n{WATCHES} watches: open in {open_s:.1f} s; {connections} Redis connection(s) named {name!r}; "
          f"all terminal {finish_s:.1f} s after the test began finishing the jobs; "
          f"process RSS +{rss:.0f} MiB (client and server)")
    assert connections == 1
    assert all(states[0] == pb.JOB_STATE_QUEUED and states[-1] == pb.JOB_STATE_SUCCEEDED for states in results), \
        {tuple(states) for states in results}
    # Every stream's slot and registration are gone once the streams ended.
    servicer = gw.gateway.servicer
    deadline = time.monotonic() + 10
    while servicer.watch_slots.open(TENANT) or servicer.fanout.listening:
        assert time.monotonic() < deadline, "watch slots or fan-out registrations were left behind"
        time.sleep(0.02)
