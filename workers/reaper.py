"""``python -m workers.reaper [--once] [--interval S]``: the database-driven safety net (ARCHITECTURE §3, §5).

Each pass:
- running jobs whose heartbeat went stale → QUEUED and sent again; after `max_attempts` → FAILED
  (dead letter, code WORKER_LOST) instead of looping;
- jobs QUEUED for longer than `resend_queued_after_s` without a claim → sent again (their broker message
  may be lost: kombu's filesystem transport drops the message of a worker that dies, Redis may lose
  unpersisted writes). A duplicate message is harmless: claiming is idempotent;
- finished jobs older than `retention_s` → their input and result objects removed, then EXPIRED (a failed
  delete leaves the job as it was, to be tried again next pass); webhook deliveries settled before then are
  deleted;
- a bounded slice of the object store swept of objects no row names (`workers.sweep`): a fenced-off
  attempt's late upload, a deleted job's leftovers, inputs of a submit that never committed.

After each pass it records the pass in `Settings.reaper_pass_file` (shared/health_file.py), which
`llada-healthcheck reaper` reads: unhealthy when the last pass failed or is older than a few intervals.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from sqlalchemy.orm import sessionmaker

from shared import attempts
from shared import repository as repo
from shared.db import make_engine, session_factory
from shared.db.types import utcnow
from shared.health_file import remove_health_file, write_health_file
from shared.logs import configure_logging
from shared.metrics_server import serve_metrics
from shared.objectstore import job_prefixes
from shared.settings import Settings, get_settings
from shared.webhooks.deliveries import purge_settled
from workers import reaper_metrics
from workers.sweep import OrphanSweep

log = logging.getLogger("llada.reaper")

DEFAULT_INTERVAL_S = 10.0
# How late a pass may finish before the health check calls the reaper stuck: a few intervals, plus room for
# one slow pass (a database that answers slowly, a long expiry).
MISSED_PASSES = 3
SLOW_PASS_ALLOWANCE_S = 60.0


@dataclass
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    swept: list[str] = field(default_factory=list)  # object keys
    purged_deliveries: int = 0  # webhook deliveries past retention


class Reaper:
    """One reaper; `enqueue(job_id, priority)` sends run_job (shared.queue.enqueue_run_job in production)."""

    def __init__(self, settings: Settings, sessions: sessionmaker, store: Any, events: Any,
                 enqueue: Callable[[str, int], None]):
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.events = events
        self.enqueue = enqueue
        # When this reaper last sent each queued job: a long but healthy backlog is re-sent once per
        # `resend_queued_after_s`, not on every pass.
        self._sent_at: dict[str, float] = {}
        self.sweep = OrphanSweep(store, sessions, input_grace_s=settings.orphan_grace_s)

    def _db(self, fn, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def _publish(self, job_id: str, event: dict) -> None:
        try:
            self.events.publish(job_id, event)
        except Exception:
            log.warning("event publish failed", extra={"job_id": job_id}, exc_info=True)

    def run_once(self) -> ReapReport:
        report = ReapReport()
        self._reap_stale(report)
        self._resend_lost(report)
        self._expire(report)
        report.swept = self.sweep.run_once()
        if report.requeued or report.dead or report.resent or report.expired or report.swept:
            log.info("reaper pass", extra={"requeued": report.requeued, "dead": report.dead,
                                           "resent": report.resent, "expired": report.expired,
                                           "swept": len(report.swept)})
        return report

    def _send(self, job_id: str, priority: int) -> None:
        self.enqueue(job_id, priority)
        self._sent_at[job_id] = time.monotonic()

    def _reap_stale(self, report: ReapReport) -> None:
        s = self.settings
        requeued, dead = self._db(attempts.reap_stale, heartbeat_timeout_s=s.heartbeat_timeout_s,
                                  max_attempts=s.max_attempts)
        for job_id in requeued:
            job = self._db(repo.load_job, job_id)
            self._send(job_id, job.priority)
            self._publish(job_id, {"type": "state", "state": "QUEUED"})
        for job_id in dead:
            job = self._db(repo.load_job, job_id)
            self._publish(job_id, {"type": "state", "state": job.state})
        report.requeued += requeued
        report.dead += dead

    def _resend_lost(self, report: ReapReport) -> None:
        window = self.settings.resend_queued_after_s
        now = time.monotonic()
        queued = self._db(repo.queued_before, utcnow() - timedelta(seconds=window))
        still_queued = set()
        for job_id, priority in queued:
            still_queued.add(job_id)
            sent = self._sent_at.get(job_id)
            if sent is not None and now - sent < window:
                continue
            self._send(job_id, priority)
            report.resent.append(job_id)
        # Forget jobs that left the queue (queued_before is bounded, so keep the recent sends too).
        self._sent_at = {j: t for j, t in self._sent_at.items() if j in still_queued or now - t < window}

    def _expire(self, report: ReapReport) -> None:
        cutoff = utcnow() - timedelta(seconds=self.settings.retention_s)
        for job_id, state in self._db(repo.finished_before, cutoff):
            # Objects first, then the row: a delete that fails leaves the job as it was, tried again next
            # pass, never an EXPIRED row whose objects stay forever.
            try:
                for prefix in job_prefixes(job_id):
                    self.store.delete_prefix(prefix)
            except Exception:
                log.warning("could not delete an expired job's objects; retrying next pass",
                            extra={"job_id": job_id}, exc_info=True)
                continue
            if self._db(repo.mark_expired, job_id, state):
                self._publish(job_id, {"type": "state", "state": "EXPIRED"})
                report.expired.append(job_id)
        # Webhook deliveries that settled (delivered or given up) before the cutoff go the same way.
        report.purged_deliveries = self._db(purge_settled, cutoff)


def reaper_from_settings(settings: Settings) -> Reaper:
    from shared.events import event_bus_from_settings
    from shared.objectstore import object_store_from_settings
    from shared.queue import enqueue_run_job

    def enqueue(job_id: str, priority: int) -> None:
        enqueue_run_job(job_id, priority=priority, settings=settings)

    return Reaper(settings, session_factory(make_engine(settings.database_url)),
                  object_store_from_settings(settings), event_bus_from_settings(settings), enqueue)


def run_forever(reaper: Reaper, interval_s: float, stop: threading.Event, pass_file: Path | None = None) -> None:
    if pass_file is not None:
        remove_health_file(pass_file)  # a predecessor's passes are not this reaper's
    while not stop.is_set():
        error, started = None, time.perf_counter()
        try:
            report = reaper.run_once()
        except Exception as err:  # a database or broker outage: keep going, the next pass retries
            log.exception("reaper pass failed")
            error = f"last pass failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            report = None
        reaper_metrics.record_pass(report, time.perf_counter() - started)
        if pass_file is not None:
            _record_pass(pass_file, interval_s, error)
        stop.wait(interval_s)
    if pass_file is not None:
        remove_health_file(pass_file)


def _record_pass(path: Path, interval_s: float, error: str | None) -> None:
    try:
        write_health_file(path, stale_after_s=MISSED_PASSES * interval_s + SLOW_PASS_ALLOWANCE_S,
                          ok=error is None, error=error, interval_s=interval_s)
    except OSError:  # the passes matter more than their record; the health check will say it is missing
        log.warning("cannot write the reaper's pass file", extra={"path": str(path)}, exc_info=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.reaper", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, help="seconds between passes")
    args = parser.parse_args(argv)
    if args.interval <= 0:
        parser.error("--interval must be > 0")
    configure_logging(service="reaper")  # so that problems reading the settings are logged as JSON too
    settings = get_settings()
    configure_logging(settings, service="reaper")
    reaper = reaper_from_settings(settings)
    if args.once:
        try:
            report = reaper.run_once()
        except Exception as err:  # e.g. an unmigrated database: one line, not a traceback
            print(f"reaper: pass failed: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
            return 1
        print(f"requeued={len(report.requeued)} dead={len(report.dead)} resent={len(report.resent)} "
              f"expired={len(report.expired)} swept={len(report.swept)}")
        return 0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("reaper started", extra={"interval_s": args.interval})
    serve_metrics(reaper_metrics.REGISTRY, settings.reaper_metrics_port, settings.metrics_host)
    run_forever(reaper, args.interval, stop, settings.reaper_pass_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
