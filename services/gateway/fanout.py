"""One event-bus subscription per gateway process, fanned out to its WatchJob streams.

A subscription per stream cost a Redis connection (or an SQLite poller) each: 500 watches, 500 connections.
Here one `subscribe_all()` — a PSUBSCRIBE on the bus's channel prefix, or one poller of the embedded file —
feeds every stream: an event for a job sets the asyncio.Event of each stream watching it. Events only say
"re-read the job" (the database stays the truth), so a stream needs no more than that flag. The price:
every gateway process receives every job's events, watched or not (small JSON messages, dropped at once
when no stream here watches the job).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

log = logging.getLogger("llada.gateway")

# Back-off between attempts to (re)subscribe while the bus is unreachable; watches poll the database meanwhile.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 15.0


class EventFanout:
    def __init__(self, bus):
        self._bus = bus
        self._listeners: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task | None = None
        self._first_attempt: asyncio.Future | None = None
        self.connected = False

    @contextlib.asynccontextmanager
    async def listen(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        """An Event set whenever an event of ``job_id`` arrives, and after the subscription had a gap
        (events in it are lost). Registered when yielded: read the job after that, and no change between
        the read and the stream is missed. While the bus is down it is only set on reconnection."""
        await self._started()
        wake = asyncio.Event()
        self._listeners.setdefault(job_id, set()).add(wake)
        try:
            yield wake
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(wake)
                if not listeners:
                    del self._listeners[job_id]

    @property
    def listening(self) -> int:
        """Streams registered (for tests and metrics)."""
        return sum(len(s) for s in self._listeners.values())

    async def _started(self) -> None:
        if self._task is None:
            self._first_attempt = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(), name="event-fanout")
        # The first watches wait for the first attempt, won or lost: subscribed before they read the job.
        await asyncio.shield(self._first_attempt)

    def _attempted(self) -> None:
        if not self._first_attempt.done():
            self._first_attempt.set_result(None)

    def _wake(self, job_id: str | None = None) -> None:
        groups = [self._listeners.get(job_id, ())] if job_id is not None else list(self._listeners.values())
        for listeners in groups:
            for wake in listeners:
                wake.set()

    async def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            try:
                async with self._bus.subscribe_all() as events:
                    self.connected = True
                    self._attempted()
                    self._wake()  # after a gap: what was published in it is lost, so everyone re-reads
                    delay = RETRY_FIRST_S
                    async for job_id, _event in events:
                        self._wake(job_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("event subscription failed; watches poll the database until it is back",
                            exc_info=True, extra={"retry_in_s": delay})
            finally:
                self.connected = False
            self._attempted()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._attempted()  # nobody stays waiting for an attempt that will not come
            self._task = None
