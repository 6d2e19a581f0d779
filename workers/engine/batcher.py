"""Step-level continuous batching of denoising requests (ARCHITECTURE §4), on one asyncio loop.

Callers `await run(key, request)`; a background task repeatedly picks a group of compatible active
requests (same block length and CFG mode), advances them together with one `sampler.step` (one batched
forward, run in a thread so the loop keeps answering progress and cancel calls), and resolves those that
finished. Requests join and leave between steps. Each request samples with its own seeded generator, so
its result does not depend on what shares its batch (the sampler's contract).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from workers.engine.tracking import FinishedProgress
from workers.model.errors import Cancelled
from workers.model.sampler import GenerationRequest, GenerationResult, RequestState, max_positions, start_request
from workers.model.sampler import step as sampler_step


def compatibility(state: RequestState) -> tuple[int, int]:
    """Requests step together only with the same block length and CFG mode (rows per request: 1, 2 or 3),
    so one forward has no padded block columns and no request waits on a wider CFG batch."""
    return state.block_length, state.num_rows


@dataclass
class _Slot:
    key: str
    stage: str
    state: RequestState
    future: asyncio.Future
    order: int
    steps: int = 0
    progress: tuple[int, int] = (0, 0)
    admitted_at: float | None = None


@dataclass
class BatcherStats:
    forwards: int = 0  # batched steps run
    request_steps: int = 0  # sum over forwards of requests advanced
    largest_batch: int = 0
    cancelled: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)  # batch size -> forwards of that size
    step_seconds: dict[int, float] = field(default_factory=dict)  # batch size -> seconds its steps took


class StepBatcher:
    """Holds at most `max_batch` active requests (the batch slots); the rest wait in arrival order."""

    def __init__(
        self,
        model: Any,
        device: Any,
        *,
        max_batch: int = 8,
        step: Callable[[Any, list[RequestState]], None] = sampler_step,
        start: Callable[..., RequestState] = start_request,
    ):
        self.model = model
        self.device = device
        self.max_batch = max_batch
        self._step = step
        self._start = start
        self._max_positions = max_positions(model)
        self._pending: deque[_Slot] = deque()
        self._active: dict[str, _Slot] = {}
        self._slots: dict[str, _Slot] = {}
        self._finished = FinishedProgress()  # finished requests' last progress, for the caller's final poll
        self._last_stepped: dict[tuple, int] = {}
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.stats = BatcherStats()

    # -- caller side ------------------------------------------------------------------------------------
    async def run(self, key: str, request: GenerationRequest, stage: str = "denoise") -> GenerationResult:
        """Queue a request and wait for its result; raises `Cancelled` if `cancel(key)` is called first."""
        if key in self._slots:
            raise ValueError(f"request key {key!r} is already running")
        # Validates (the backbone's position limit included): a bad request fails here, alone.
        state = self._start(request, self.device, max_positions=self._max_positions)
        slot = _Slot(key, stage, state, asyncio.get_running_loop().create_future(), next(self._counter))
        slot.progress = state.progress()
        self._slots[key] = slot
        self._pending.append(slot)
        self._ensure_loop()
        self._wake.set()
        try:
            return await slot.future
        finally:
            # Also on asyncio cancellation (the caller's Ray task cancelled): free the slot at once.
            self._release(slot)

    def cancel(self, key: str) -> bool:
        """Drop a request now (pending or active); its `run` raises `Cancelled`. False if unknown."""
        slot = self._slots.get(key)
        if slot is None:
            return False
        self._release(slot)
        self.stats.cancelled += 1
        if not slot.future.done():
            slot.future.set_exception(Cancelled(f"cancelled during {slot.stage}"))
        return True

    def progress(self, key: str) -> tuple[str, int, int] | None:
        slot = self._slots.get(key)
        return self._finished.get(key) if slot is None else (slot.stage, *slot.progress)

    def settled(self, key: str) -> list[int] | None:
        """A running request's settled ids (its finished blocks: `RequestState.settled_ids`); None once it left."""
        slot = self._slots.get(key)
        return None if slot is None else slot.state.settled_ids()

    def occupancy(self) -> dict[str, int]:
        return {"active": len(self._active), "pending": len(self._pending), "max_batch": self.max_batch}

    # -- loop -------------------------------------------------------------------------------------------
    def _release(self, slot: _Slot) -> None:
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
            if slot.state.done:
                self._finished.record(slot.key, (slot.stage, *slot.progress))
        if self._active.get(slot.key) is slot:
            del self._active[slot.key]
        try:
            self._pending.remove(slot)
        except ValueError:
            pass
        self._wake.set()

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def _admit(self) -> None:
        while self._pending and len(self._active) < self.max_batch:
            slot = self._pending.popleft()
            slot.admitted_at = time.perf_counter()
            self._active[slot.key] = slot

    def _next_group(self) -> list[_Slot]:
        groups: dict[tuple, list[_Slot]] = {}
        for slot in self._active.values():
            groups.setdefault(compatibility(slot.state), []).append(slot)
        if not groups:
            return []
        # Round robin between incompatible groups: the one stepped longest ago goes next.
        chosen = min(groups, key=lambda g: (self._last_stepped.get(g, -1), min(s.order for s in groups[g])))
        self._last_stepped[chosen] = self.stats.forwards
        return sorted(groups[chosen], key=lambda s: s.order)

    async def _loop(self) -> None:
        try:
            await self._serve()
        except BaseException as err:  # the loop must never die silently with callers still waiting
            for slot in list(self._slots.values()):
                self._finish(slot, error=err if isinstance(err, Exception) else RuntimeError("batcher stopped"))
            raise

    async def _serve(self) -> None:
        while True:
            self._admit()
            group = self._next_group()
            if not group:
                self._wake.clear()
                await self._wake.wait()
                continue
            states = [slot.state for slot in group]
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._step, self.model, states)
            except Exception as err:  # a failing forward fails the requests it held, not the loop
                for slot in group:
                    self._finish(slot, error=err)
                continue
            self.stats.forwards += 1
            self.stats.request_steps += len(group)
            self.stats.largest_batch = max(self.stats.largest_batch, len(group))
            self.stats.batch_sizes[len(group)] = self.stats.batch_sizes.get(len(group), 0) + 1
            seconds = time.perf_counter() - started
            self.stats.step_seconds[len(group)] = self.stats.step_seconds.get(len(group), 0.0) + seconds
            for slot in group:
                slot.steps += 1
                slot.progress = slot.state.progress()
                if slot.state.done:
                    self._finish(slot)

    def _finish(self, slot: _Slot, error: BaseException | None = None) -> None:
        if self._slots.get(slot.key) is not slot:
            return  # cancelled while its last step ran
        self._release(slot)
        if slot.future.done():
            return
        if error is not None:
            slot.future.set_exception(error)
        else:
            slot.future.set_result(slot.state.result())
