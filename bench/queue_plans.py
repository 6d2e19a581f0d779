"""The query plans of every per-job statement, on PostgreSQL with a deep queue: what stays O(1) in the backlog.

    .venv/bin/python bench/queue_plans.py [--backlog 1000000] [--postgres-admin-url postgresql://postgres@…/postgres]

Creates a throwaway database (dropped afterwards), migrates it, bulk-loads `--backlog` queued jobs of 50
tenants (as bench/submit_throughput.py does) and `--finished` finished jobs (half within retention, half
expired long ago), and runs the real
repository and attempt functions — the gateway's submit and reads, the worker's claim, heartbeat, progress and
finish, the reaper's scans — capturing each SQL statement they send. Each is shown with its plan right after
its step ran (so the rows are as the step saw them): EXPLAIN ANALYZE for reads, plain EXPLAIN for writes (so
nothing is changed twice). Exits 1 if any per-job plan scans `jobs` sequentially or has a node over it that
produced more than WIDE_ROWS rows (the metrics scrape's count by state, shown last, does: it runs every
scrape interval, not per call).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from types import SimpleNamespace
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psycopg  # noqa: E402
from sqlalchemy import event, update  # noqa: E402

from services.gateway.server import jobs_by_state  # noqa: E402
from shared import attempts  # noqa: E402
from shared import repository as repo  # noqa: E402
from shared.db import Job, make_engine, session_factory, upgrade  # noqa: E402
from shared.db.types import utcnow  # noqa: E402
from submit_throughput import drop_database, load_backlog, make_database  # noqa: E402

HEARTBEAT_TIMEOUT_S = 60
# A per-job statement reads at most this many rows of jobs (the position counts up to 101).
WIDE_ROWS = 1000
_ACTUAL_ROWS = re.compile(r"actual time=\S+ rows=(\d+)")
# Not a per-job statement: the gateway's llada_jobs gauge, read on each scrape (shown, not held to the rule).
SCRAPE = "gateway metrics scrape: llada_jobs by state"


def _reads_widely(plan: list[str]) -> bool:
    """A sequential scan of jobs, or a node over jobs' indexes that produced more than WIDE_ROWS rows (a
    bitmap of the whole queue, say, before a LIMIT could stop it)."""
    for line in plan:
        if "Seq Scan on jobs" in line:
            return True
        on_jobs = " on jobs" in line or "using ix_jobs" in line or "using jobs_pkey" in line
        produced = _ACTUAL_ROWS.search(line)
        if on_jobs and produced and int(produced.group(1)) > WIDE_ROWS:
            return True
    return False


def load_finished(libpq_url: str, n: int) -> None:
    """n finished jobs: half SUCCEEDED an hour ago (inside retention), half EXPIRED 40 days ago."""
    with psycopg.connect(libpq_url) as conn:
        conn.execute("SET session_replication_role = replica")  # a bulk load: no per-row triggers
        conn.execute("""
            INSERT INTO jobs (id, tenant, kind, params, priority, input_keys, state, progress_step, progress_total,
                              attempts, handed_back, timings, output_keys, created_at, finished_at, cancel_requested)
            SELECT gen_random_uuid()::text, 'done-' || (g %% 50), 'TEXT_TO_IMAGE', '{"prompt": "done"}', 0, '{}',
                   CASE WHEN g %% 2 = 0 THEN 'SUCCEEDED' ELSE 'EXPIRED' END, 0, 0, 1, 0, '{}', '{}',
                   now() - interval '41 days', now() - CASE WHEN g %% 2 = 0 THEN interval '1 hour'
                                                            ELSE interval '40 days' END, false
            FROM generate_series(1, %s) AS g""", (n,))
        conn.execute("SET session_replication_role = origin")
        conn.commit()
        conn.execute("ANALYZE jobs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--finished", type=int, default=200_000)
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    if not 0 <= args.backlog <= 5_000_000:
        parser.error("--backlog must be in [0, 5000000]")
    name = f"llada_plans_{int(time.time())}"
    database_url, libpq_url = make_database(args.postgres_admin_url, name)
    engine = None
    try:
        upgrade(database_url)
        load_backlog(database_url, libpq_url, args.backlog)
        load_finished(libpq_url, args.finished)
        engine = make_engine(database_url)
        Session = session_factory(engine)
        captured: list[tuple[str, object]] = []
        capturing = [False]
        wide: list[str] = []

        @event.listens_for(engine, "before_cursor_execute")
        def capture(conn, cursor, statement, parameters, context, executemany):
            if capturing[0] and not statement.lstrip().upper().startswith(("EXPLAIN", "SELECT PG_ADVISORY")):
                captured.append((statement, parameters))

        def run(label, fn, *a, **kw):
            """Runs one step, then shows each statement it sent, explained while the rows are as they were."""
            captured.clear()
            capturing[0] = True
            try:
                with Session() as s:
                    result = fn(s, *a, **kw)
            finally:
                capturing[0] = False
            print(f"\n=== {label}")
            with engine.connect() as conn:
                for statement, parameters in captured:
                    if statement.strip() in ("BEGIN", "COMMIT", "ROLLBACK"):
                        continue
                    read = statement.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in statement.upper()
                    plan = conn.exec_driver_sql(("EXPLAIN (ANALYZE, BUFFERS) " if read else "EXPLAIN ") + statement,
                                                parameters).scalars().all()
                    conn.rollback()
                    print(" ".join(statement.split())[:300])
                    for line in plan:
                        print("    " + line)
                    if label != SCRAPE and _reads_widely(plan):
                        wide.append(label)
            return result

        submitted = run("gateway: SubmitJob (checked)", repo.submit_job, tenant="bench", request_id="r1",
                        kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={},
                        limits=repo.QueueLimits(per_tenant=10_000_000, total=10_000_000))
        run("gateway: SubmitJob, idempotent replay", repo.submit_job, tenant="bench", request_id="r1",
            kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={})
        job, _ = run("gateway: GetJob (the job at the back, with its place in line)", repo.get_job_and_position,
                     "bench", submitted.job.id)
        run("gateway: ListJobs (queued, with places in line)", repo.list_jobs_and_positions, "bench", state="QUEUED")
        attempt = run("worker: claim", attempts.claim_job, job.id, "w1", heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
        run("worker: heartbeat", attempts.heartbeat, attempt)
        run("worker: progress", attempts.record_progress, attempt, "denoise", 1, 8)
        run("worker: finish", attempts.finish_job, attempt, output_keys={})
        with Session() as s:
            stale = repo.submit_job(s, tenant="bench", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                                    input_keys={}).job
            attempts.claim_job(s, stale.id, "w2", heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
            s.execute(update(Job).where(Job.id == stale.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
            s.commit()
        run("reaper: stale leases", attempts.reap_stale, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, max_attempts=3)
        run("reaper: queued jobs whose message may be lost", repo.queued_before, utcnow() - timedelta(minutes=5))
        run("reaper: finished past retention", repo.finished_before, utcnow() - timedelta(days=1))
        run("autoscaler: backlog", repo.count_backlog)
        run(SCRAPE, lambda s: jobs_by_state(SimpleNamespace(sessions=lambda: s))())
        print(f"\n{args.backlog} queued and {args.finished} finished jobs in the table; steps that read more than "
              f"{WIDE_ROWS} rows of jobs or scanned it sequentially: {sorted(set(wide)) or 'none'}")
        return 1 if wide else 0
    finally:
        if engine is not None:
            engine.dispose()
        drop_database(args.postgres_admin_url, name)


if __name__ == "__main__":
    raise SystemExit(main())
