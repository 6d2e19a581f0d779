"""The per-tenant cap on open WatchJob streams of one gateway process (Settings.max_watches_per_tenant)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from services.gateway.errors import ResourceExhausted


class WatchSlots:
    """Counts each tenant's open streams; ``hold(tenant)`` takes one for the life of a stream.

    Counted in the process: with N gateway replicas a tenant may hold N × the limit in all, and every
    replica stays serviceable to the others. All calls happen on the event loop, so no lock is needed.
    """

    def __init__(self, per_tenant: int):
        self.per_tenant = per_tenant
        self._open: Counter[str] = Counter()

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """Raises ResourceExhausted when ``tenant`` already holds the limit; released however the block ends."""
        if self._open[tenant] >= self.per_tenant:
            raise ResourceExhausted(f"too many open watches for this tenant (limit {self.per_tenant}); "
                                    "close one, or poll GetJob")
        self._open[tenant] += 1
        try:
            yield
        finally:
            self._open[tenant] -= 1
            if not self._open[tenant]:
                del self._open[tenant]

    def open(self, tenant: str) -> int:
        return self._open[tenant]
