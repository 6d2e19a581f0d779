"""Job progress events between processes: workers publish, the gateway's WatchJob streams subscribe.

Events are JSON-serialisable dicts and best-effort (Postgres stays the truth; a watcher that misses
one re-reads the job). Two backends: Redis pub/sub (production) and an embedded one that needs no
server — a SQLite file every process on the machine shares, polled by subscribers.

    async with bus.subscribe(job_id) as events:   # subscribed from here on
        snapshot = read_job_from_db()             # so nothing between read and stream is lost
        async for event in events: ...

`bus.subscribe_all()` gives every job's events as `(job_id, event)` pairs on one subscription (one Redis
connection, one SQLite poller): the gateway fans it out to its WatchJob streams (services/gateway/fanout.py).
"""

from __future__ import annotations

import abc
import asyncio
import json
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

import redis
import redis.asyncio as aioredis


class Subscription(abc.ABC):
    """Events of one job (or `(job_id, event)` pairs of every job), in publish order. Subscribed once
    awaited, entered or first iterated."""

    def __init__(self) -> None:
        self._started = False
        self._closed = False

    async def start(self) -> "Subscription":
        if not self._started and not self._closed:
            await self._start()
            self._started = True  # only once subscribed: a failed start leaves nothing to close
        return self

    def __await__(self):
        return self.start().__await__()

    async def __aenter__(self) -> "Subscription":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Any:
        await self.start()
        if self._closed:
            raise StopAsyncIteration
        return await self._next()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._started:
                await self._close()

    @abc.abstractmethod
    async def _start(self) -> None: ...

    @abc.abstractmethod
    async def _next(self) -> Any: ...

    @abc.abstractmethod
    async def _close(self) -> None: ...


@runtime_checkable
class EventBus(Protocol):
    def publish(self, job_id: str, event: dict[str, Any]) -> None: ...
    def subscribe(self, job_id: str) -> Subscription: ...
    def subscribe_all(self) -> Subscription: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------- Redis


# Seconds a subscription's connection may stay quiet before redis-py pings it.
HEALTH_CHECK_INTERVAL_S = 15.0
# Seconds a subscription waits for a connection: an unreachable Redis is reported, not waited on for minutes.
CONNECT_TIMEOUT_S = 5.0


class RedisEventBus:
    """Redis pub/sub, one channel per job: `<prefix><job_id>`. `client_name` names every connection of
    the bus (CLIENT LIST shows who holds which)."""

    def __init__(self, url: str, *, prefix: str = "llada:events:", client_name: str | None = None):
        self.url = url
        self.prefix = prefix
        self.client_name = client_name
        self._client = redis.Redis.from_url(url, client_name=client_name)

    def channel(self, job_id: str) -> str:
        return self.prefix + job_id

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        self._client.publish(self.channel(job_id), json.dumps(event))

    def subscribe(self, job_id: str) -> Subscription:
        return _RedisSubscription(self, channel=self.channel(job_id))

    def subscribe_all(self) -> Subscription:
        return _RedisSubscription(self, pattern=_glob_escape(self.prefix) + "*")

    def close(self) -> None:
        self._client.close()


def _glob_escape(text: str) -> str:
    """`text` matched literally by a PSUBSCRIBE pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class _RedisSubscription(Subscription):
    """One job's channel (yields events) or the pattern of every job's channel (yields (job_id, event))."""

    def __init__(self, bus: RedisEventBus, *, channel: str | None = None, pattern: str | None = None):
        super().__init__()
        self._bus = bus
        self._channel = channel
        self._pattern = pattern

    async def _start(self) -> None:
        # One connection per subscription, created on the subscriber's own event loop; health checks
        # notice a connection that died silently (the reader then fails and the subscriber resubscribes).
        self._client = aioredis.Redis.from_url(self._bus.url, client_name=self._bus.client_name,
                                               health_check_interval=HEALTH_CHECK_INTERVAL_S,
                                               socket_connect_timeout=CONNECT_TIMEOUT_S)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            if self._pattern is not None:
                await self._pubsub.psubscribe(self._pattern)
            else:
                await self._pubsub.subscribe(self._channel)
        except BaseException:
            await self._close()
            raise

    async def _next(self) -> Any:
        while True:
            # A bounded wait, so that the health check runs on a quiet connection.
            message = await self._pubsub.get_message(timeout=HEALTH_CHECK_INTERVAL_S)
            if message is None:
                continue
            if message["type"] == "message":
                return json.loads(message["data"])
            if message["type"] == "pmessage":
                channel = message["channel"].decode()
                return channel[len(self._bus.prefix):], json.loads(message["data"])

    async def _close(self) -> None:
        await self._pubsub.aclose()
        await self._client.aclose()


# ---------------------------------------------------------------- embedded (SQLite file)

# How often an embedded subscriber looks for new events: the latency of progress updates.
EMBEDDED_POLL_INTERVAL_S = 0.05
# Rows one poll of `subscribe_all` reads at most (the next poll reads on at once).
EMBEDDED_FETCH_ROWS = 1000
# Events older than this are pruned; watchers read the job itself after a gap anyway.
EMBEDDED_KEEP_S = 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused after pruning
    job_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_job_id ON events (job_id, id);
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class EmbeddedEventBus:
    """Cross-process events without a server: rows in a SQLite file, subscribers poll by id."""

    def __init__(self, path: str | Path, *, poll_interval_s: float = EMBEDDED_POLL_INTERVAL_S, keep_s: float = EMBEDDED_KEEP_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.poll_interval_s = poll_interval_s
        self.keep_s = keep_s
        self._local = threading.local()
        self._published = 0
        conn = _connect(self.path)
        conn.executescript(_SCHEMA)
        conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
        return conn

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        conn = self._conn()
        now = time.time()
        conn.execute("INSERT INTO events (job_id, payload, created_at) VALUES (?, ?, ?)", (job_id, json.dumps(event), now))
        self._published += 1
        if self._published % 500 == 1:
            conn.execute("DELETE FROM events WHERE created_at < ?", (now - self.keep_s,))

    def subscribe(self, job_id: str) -> Subscription:
        return _EmbeddedSubscription(self, job_id)

    def subscribe_all(self) -> Subscription:
        return _EmbeddedSubscription(self, None)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _EmbeddedSubscription(Subscription):
    """One job's events, or with ``job_id`` None every job's as (job_id, event): one poller for all."""

    def __init__(self, bus: EmbeddedEventBus, job_id: str | None):
        super().__init__()
        self._bus = bus
        self._job_id = job_id
        self._pending: deque[Any] = deque()
        # A cancelled watcher leaves its fetch running in a worker thread; closing the connection under
        # that query crashes sqlite3, so queries and close take turns on this lock.
        self._conn_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    async def _start(self) -> None:
        self._conn = await asyncio.to_thread(_connect, self._bus.path)
        self._last_id = await asyncio.to_thread(self._max_id)

    def _max_id(self) -> int:
        return self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]

    def _fetch(self) -> list[tuple[int, str, str]]:
        with self._conn_lock:
            if self._conn is None:
                return []
            if self._job_id is None:
                return self._conn.execute(
                    "SELECT id, job_id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?",
                    (self._last_id, EMBEDDED_FETCH_ROWS),
                ).fetchall()
            return self._conn.execute(
                "SELECT id, job_id, payload FROM events WHERE job_id = ? AND id > ? ORDER BY id",
                (self._job_id, self._last_id),
            ).fetchall()

    def _close_connection(self) -> None:
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _next(self) -> Any:
        while not self._pending:
            rows = await asyncio.to_thread(self._fetch)
            for row_id, job_id, payload in rows:
                self._last_id = row_id
                event = json.loads(payload)
                self._pending.append(event if self._job_id is not None else (job_id, event))
            if not self._pending:
                await asyncio.sleep(self._bus.poll_interval_s)
        return self._pending.popleft()

    async def _close(self) -> None:
        await asyncio.to_thread(self._close_connection)


def event_bus_from_settings(settings, *, client_name: str | None = None) -> EventBus:
    """`redis://…` / `rediss://…` → RedisEventBus (its connections named `client_name`);
    `embedded://<path>` → EmbeddedEventBus."""
    url = settings.event_bus_url
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        return RedisEventBus(url, prefix=settings.event_channel_prefix, client_name=client_name)
    if scheme == "embedded":
        path = url[len("embedded://"):]
        if not path:
            raise ValueError("event_bus_url: embedded:// needs a file path, e.g. embedded:///var/lib/llada/events.db")
        return EmbeddedEventBus(path)
    raise ValueError(f"event_bus_url: unsupported scheme {scheme!r} (use redis:// or embedded://)")
