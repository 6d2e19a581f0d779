"""The orphan sweep: removes objects that no job row names (ARCHITECTURE §3), a bounded slice per pass.

Result objects live under `results/<job>/<attempt>/`. One is an orphan when its job row is gone (deleted
while an attempt still wrote), or the row does not name it and its attempt is not the job's live one: a
fenced-off attempt's late upload, the outputs of an attempt that was cancelled, failed or expired.
Input objects (`inputs/<job>/`) are orphans when no row names them once they are older than a grace
period: a gateway killed between its upload and its insert, or the leftovers of an expiry whose delete
failed. The rows are read after the listing, and a row only ever moves on, so an object in use when
listed is never judged an orphan.

Each pass lists at most `batch` objects per prefix, resuming after the last key it saw and starting over
at the end, so a big bucket is covered in several passes at a bounded cost each. Deleting is idempotent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy.orm import sessionmaker

from shared import repository as repo
from shared.db.models import Job
from shared.db.types import utcnow
from shared.jobs import JobState
from shared.objectstore import INPUTS_PREFIX, RESULTS_PREFIX, StoredObject
from shared.states import ACTIVE_STATES

log = logging.getLogger("llada.reaper")

DEFAULT_BATCH = 1000
_ACTIVE = {st.value for st in ACTIVE_STATES}


class OrphanSweep:
    def __init__(self, store: Any, sessions: sessionmaker, *, input_grace_s: float, batch: int = DEFAULT_BATCH):
        self.store = store
        self.sessions = sessions
        self.input_grace = timedelta(seconds=input_grace_s)
        self.batch = batch
        self._after = {RESULTS_PREFIX: "", INPUTS_PREFIX: ""}

    def run_once(self) -> list[str]:
        """One bounded slice of each prefix; returns the keys removed."""
        removed: list[str] = []
        for prefix in (RESULTS_PREFIX, INPUTS_PREFIX):
            objects = list(islice(self.store.list_after(prefix, self._after[prefix]), self.batch))
            # A full slice: go on after its last key next time; a short one reached the end: start over.
            self._after[prefix] = objects[-1].key if len(objects) == self.batch else ""
            if not objects:
                continue
            with self.sessions() as s:
                rows = repo.jobs_by_id(s, (_job_of(obj.key) for obj in objects))
            now = utcnow()
            for obj in objects:
                if self._is_orphan(prefix, obj, rows.get(_job_of(obj.key)), now):
                    self.store.delete(obj.key)
                    removed.append(obj.key)
        if removed:
            log.info("orphan objects removed", extra={"count": len(removed), "keys": removed[:20]})
        return removed

    def _is_orphan(self, prefix: str, obj: StoredObject, job: Job | None, now: datetime) -> bool:
        if prefix == RESULTS_PREFIX:
            if job is None:
                return True
            if obj.key in (job.output_keys or {}).values():
                return False
            attempt = _attempt_of(obj.key)
            live = job.state in _ACTIVE and job.worker_id is not None
            # A key without an attempt folder is from before attempt-scoped keys: kept while its job runs.
            return not (live and attempt in (None, job.attempts))
        named = job is not None and job.state != JobState.EXPIRED.value \
            and obj.key in (job.input_keys or {}).values()
        return not named and now - obj.modified > self.input_grace


def _job_of(key: str) -> str:
    return key.split("/", 2)[1] if key.count("/") >= 2 else ""


def _attempt_of(key: str) -> int | None:
    """`results/<job>/<attempt>/<name>` → attempt; None for the older `results/<job>/<name>`."""
    parts = key.split("/")
    return int(parts[2]) if len(parts) >= 4 and parts[2].isdigit() else None
