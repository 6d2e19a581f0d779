"""A real gateway on loopback, in this process: SQLite + local object store + the embedded event bus.

The only double is the queue producer (no Celery worker exists in these tests): QueueProducerDouble
records what the gateway would have sent. Tests drive job states through the repository, as a
worker would.
"""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from services.gateway.server import start_gateway
from services.gateway.servicer import GatewayDeps
from services.gateway.wiring import gateway_sessions
from shared import repository as repo
from shared.db import upgrade
from shared.db.models import Job
from shared.events import EmbeddedEventBus
from shared.objectstore import LocalObjectStore
from tests.postgres_databases import throwaway_database
from tests.gateway.queue_double import QueueProducerDouble
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from shared.settings import Settings


async def _cancel_pending_tasks(timeout: float = 10) -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


class LoopThread:
    """An asyncio loop in a daemon thread, for the grpc.aio server under synchronous tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.run(_cancel_pending_tasks())  # as asyncio.run ends: tasks left over get to clean up
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@dataclass
class GatewayHarness:
    address: str
    settings: Settings
    sessions: object
    store: object  # LocalObjectStore unless a test passes another
    events: EmbeddedEventBus
    queue: QueueProducerDouble
    gateway: object
    channel: grpc.Channel
    stub: pb_grpc.JobServiceStub

    def key(self, tenant: str) -> tuple[tuple[str, str], ...]:
        with self.sessions() as s:
            return (("x-api-key", repo.create_api_key(s, tenant)),)

    def job_count(self) -> int:
        with self.sessions() as s:
            return s.query(Job).count()

    def objects(self) -> list[str]:
        """The stored objects' keys. os.walk, not rglob: the gateway may remove a folder while it is listed."""
        root = self.store.root
        return sorted((Path(folder) / name).relative_to(root).as_posix()
                      for folder, _, names in os.walk(root) for name in names)

    def db(self, fn, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)


def _make_harness(tmp_path, loop: LoopThread, *, events=None, store=None, **overrides) -> GatewayHarness:
    overrides.setdefault("watch_poll_interval_s", 0.25)
    settings = Settings(data_dir=tmp_path, metrics_port=0, **overrides)
    upgrade(settings.database_url)
    sessions, read_sessions = gateway_sessions(settings.database_url)  # as the gateway's wiring makes them
    store = store or LocalObjectStore(tmp_path / "objects")
    events = events or EmbeddedEventBus(tmp_path / "events.db", poll_interval_s=0.02)
    queue = QueueProducerDouble()
    deps = GatewayDeps(settings=settings, sessions=sessions, store=store, events=events, enqueue=queue,
                       read_sessions=read_sessions)
    gateway = loop.run(start_gateway(deps, listen="127.0.0.1:0"))
    address = f"127.0.0.1:{gateway.port}"
    channel = grpc.insecure_channel(address)
    return GatewayHarness(address, settings, sessions, store, events, queue, gateway, channel,
                          pb_grpc.JobServiceStub(channel))


@pytest.fixture(scope="module")
def loop_thread():
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def make_gateway(tmp_path_factory, loop_thread):
    """Starts gateways with settings overrides; all stopped at the end of the module."""
    started: list[GatewayHarness] = []

    def make(*, events=None, store=None, **overrides) -> GatewayHarness:
        harness = _make_harness(tmp_path_factory.mktemp("gateway"), loop_thread, events=events, store=store,
                                **overrides)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.channel.close()
        loop_thread.run(harness.gateway.stop(0))


@pytest.fixture(scope="module")
def gw(make_gateway) -> GatewayHarness:
    return make_gateway(max_prompt_chars=500, max_image_bytes=200_000)


@pytest.fixture(scope="module")
def postgres_db_url():
    """A throwaway Postgres database for this module's gateways (migrated by make_gateway)."""
    with throwaway_database("llada_gw_test") as url:
        yield url


@pytest.fixture(scope="module")
def empty_postgres_url():
    """A Postgres database without the service's tables: every statement fails, and not as an outage."""
    with throwaway_database("llada_gw_empty") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def make_gateway_each_db(request, make_gateway):
    """make_gateway on SQLite, then on Postgres: for what the two databases treat differently."""
    on = {} if request.param == "sqlite" else {"database_url": request.getfixturevalue("postgres_db_url")}
    return lambda **overrides: make_gateway(**on, **overrides)


@pytest.fixture(scope="module")
def gw_each_db(make_gateway_each_db) -> GatewayHarness:
    return make_gateway_each_db()
