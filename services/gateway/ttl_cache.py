"""A bounded map whose entries expire: the API-key interceptor's caches of known and unknown keys."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    """At most `max_entries` entries, each readable for `ttl_s` seconds after it was put. Full, it drops
    the oldest entry: a caller sending endless new keys costs memory up to the bound and no more.
    Used from the event loop only (no lock)."""

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._entries[key]
            return None
        return entry[0]

    def put(self, key: str, value: V) -> None:
        self._entries.pop(key, None)  # re-inserted at the end: insertion order is expiry order
        self._entries[key] = (value, self._clock() + self.ttl_s)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
