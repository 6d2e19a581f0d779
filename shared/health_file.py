"""Health files: how a process without a network port tells its container health check that it is well.

The process rewrites its file while it is well (the worker: consuming with its model loaded; the reaper: after
each pass) and removes it when it is not; `llada-healthcheck` (services/healthcheck.py) reads it and judges
it. The writer says how old the file may grow (`stale_after_s`), because only it knows how often it writes;
the age is what catches a process that hung or died without removing its file. A writer may also record that
its last round went wrong (`ok: false` and an `error`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.files import replace_file


def write_health_file(path: Path, *, stale_after_s: float, ok: bool = True, **facts: Any) -> None:
    """Records `facts` (JSON) and now; written whole, so a check never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"written_at": time.time(), "stale_after_s": stale_after_s, "ok": ok, **facts}
    replace_file(path, json.dumps(record).encode())


def remove_health_file(path: Path) -> None:
    path.unlink(missing_ok=True)


@dataclass(frozen=True)
class HealthRecord:
    age_s: float
    facts: dict[str, Any]


def read_health_file(path: Path) -> HealthRecord | None:
    """The file's facts and age in seconds, or None when there is no (readable) file."""
    try:
        facts = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or not isinstance(facts.get("written_at"), (int, float)):
        return None
    return HealthRecord(age_s=max(0.0, time.time() - facts["written_at"]), facts=facts)


def judge(record: HealthRecord | None) -> tuple[bool, str]:
    """(healthy, why) for a record read by `read_health_file`."""
    if record is None:
        return False, "no health file"
    stale_after = float(record.facts.get("stale_after_s", 0))
    if record.age_s > stale_after:
        return False, f"last written {record.age_s:.0f} s ago (more than {stale_after:.0f} s)"
    if not record.facts.get("ok", False):
        return False, f"{record.facts.get('error') or 'not ok'} ({record.age_s:.0f} s ago)"
    return True, f"written {record.age_s:.0f} s ago"
