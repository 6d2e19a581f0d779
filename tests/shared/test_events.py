import asyncio
import subprocess
import sys
import uuid

import pytest
import redis

from shared.events import EmbeddedEventBus, EventBus, RedisEventBus, event_bus_from_settings
from shared.settings import Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_available() -> bool:
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture(params=["embedded", "redis"])
def bus(request, tmp_path):
    if request.param == "redis":
        if not redis_available():
            pytest.skip("no Redis at " + REDIS_URL)
        bus = RedisEventBus(REDIS_URL, prefix=f"llada-test-{uuid.uuid4().hex[:8]}:")
    else:
        bus = EmbeddedEventBus(tmp_path / "events.db", poll_interval_s=0.01)
    yield bus
    bus.close()


async def collect(subscription, n, timeout=10):
    return [await asyncio.wait_for(anext(subscription), timeout) for _ in range(n)]


def test_subscriber_gets_events_of_its_job_in_order(bus):
    assert isinstance(bus, EventBus)

    async def scenario():
        bus.publish("job-a", {"seq": 0})  # before subscribing: not delivered
        async with bus.subscribe("job-a") as events:
            for seq in (1, 2, 3):
                bus.publish("job-b", {"other": seq})
                bus.publish("job-a", {"seq": seq, "stage": "denoise"})
            return await collect(events, 3)

    got = asyncio.run(scenario())
    assert got == [{"seq": 1, "stage": "denoise"}, {"seq": 2, "stage": "denoise"}, {"seq": 3, "stage": "denoise"}]


def test_two_subscribers_both_receive(bus):
    async def scenario():
        first, second = await bus.subscribe("j"), await bus.subscribe("j")
        bus.publish("j", {"state": "SUCCEEDED"})
        got = await collect(first, 1), await collect(second, 1)
        await first.aclose()
        await second.aclose()
        return got

    assert asyncio.run(scenario()) == ([{"state": "SUCCEEDED"}], [{"state": "SUCCEEDED"}])


def test_one_subscription_gets_every_jobs_events_with_their_ids(bus):
    async def scenario():
        async with bus.subscribe_all() as events:
            bus.publish("job-a", {"seq": 1})
            bus.publish("job-b", {"seq": 2})
            bus.publish("job-a", {"seq": 3})
            return await collect(events, 3)

    assert asyncio.run(scenario()) == [("job-a", {"seq": 1}), ("job-b", {"seq": 2}), ("job-a", {"seq": 3})]


def test_subscribe_all_matches_the_prefix_literally():
    """A prefix with glob characters: no other prefix's channels leak in."""
    if not redis_available():
        pytest.skip("no Redis at " + REDIS_URL)
    tag = uuid.uuid4().hex[:8]
    bus = RedisEventBus(REDIS_URL, prefix=f"llada-test-{tag}-[ab]*:")
    neighbour = RedisEventBus(REDIS_URL, prefix=f"llada-test-{tag}-a-x:")  # what "[ab]*" would match as a glob

    async def scenario():
        async with bus.subscribe_all() as events:
            neighbour.publish("stray", {"n": 0})
            bus.publish("mine", {"n": 1})
            return await collect(events, 1)

    try:
        assert asyncio.run(scenario()) == [("mine", {"n": 1})]
    finally:
        bus.close()
        neighbour.close()


def test_events_cross_process_boundaries(bus):
    """A worker process publishes; this process (the gateway) receives."""
    if isinstance(bus, RedisEventBus):
        make_bus = f"RedisEventBus({REDIS_URL!r}, prefix={bus.prefix!r})"
    else:
        make_bus = f"EmbeddedEventBus({str(bus.path)!r})"
    publisher = (
        "from shared.events import *\n"
        f"bus = {make_bus}\n"
        "for step in range(1, 4): bus.publish('job-x', {'step': step, 'total': 3})\n"
    )

    async def scenario():
        async with bus.subscribe("job-x") as events:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", publisher)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
            return await collect(events, 3)

    assert [e["step"] for e in asyncio.run(scenario())] == [1, 2, 3]


def test_closed_subscription_stops_iterating(tmp_path):
    bus = EmbeddedEventBus(tmp_path / "e.db")

    async def scenario():
        sub = bus.subscribe("j")
        await sub.aclose()
        return [event async for event in sub]

    assert asyncio.run(scenario()) == []


def test_bus_from_settings(tmp_path):
    embedded = event_bus_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(embedded, EmbeddedEventBus) and embedded.path == tmp_path.resolve() / "events.db"
    assert isinstance(event_bus_from_settings(Settings(event_bus_url=REDIS_URL)), RedisEventBus)
    with pytest.raises(ValueError, match="event_bus_url"):
        event_bus_from_settings(Settings(event_bus_url="kafka://x"))


def test_a_failed_subscribe_can_still_be_closed():
    bus = RedisEventBus("redis://127.0.0.1:1/0")  # nothing listens on port 1

    async def scenario():
        sub = bus.subscribe("j")
        with pytest.raises(redis.ConnectionError):
            await sub.start()
        await sub.aclose()
        return [event async for event in sub]

    assert asyncio.run(scenario()) == []
