"""The query plans of every per-job statement, on PostgreSQL with a deep queue: what stays O(1) in the backlog.

    .venv/bin/python bench/queue_plans.py [--backlog 1000000] [--postgres-admin-url postgresql://postgres@…/postgres]

Creates a throwaway database (dropped afterwards), migrates it, bulk-loads `--backlog` queued jobs of 50
tenants (as bench/submit_throughput.py does) and `--finished` finished jobs (half within retention, half
expired long ago), and runs the real
repository and attempt functions — the gateway's submit and reads, the worker's claim, heartbeat, progress and
finish, the reaper's scans — capturing each SQL statement they send. Each is shown with its plan: EXPLAIN
ANALYZE for reads (run against the real rows), plain EXPLAIN for writes (so nothing is changed twice).
Exits 1 if any per-job plan reads the `jobs` table sequentially (the metrics scrape's count by state, shown
last, does: it is read every scrape interval, not per call).
"""

from __future__ import annotations

import argparse
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
# Not a per-job statement: the gateway's llada_jobs gauge, read on each scrape (shown, not held to the rule).
SCRAPE = "gateway metrics scrape: llada_jobs by state"


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
        captured: list[tuple[str, str, object]] = []
        step = ["setup"]

        @event.listens_for(engine, "before_cursor_execute")
        def capture(conn, cursor, statement, parameters, context, executemany):
            if step[0] != "setup" and not statement.lstrip().upper().startswith(("EXPLAIN", "SELECT PG_ADVISORY")):
                captured.append((step[0], statement, parameters))

        def run(label, fn, *a, **kw):
            step[0] = label
            with Session() as s:
                result = fn(s, *a, **kw)
            step[0] = "setup"
            return result

        submitted = run("gateway: SubmitJob (checked)", repo.submit_job, tenant="bench", request_id="r1",
                        kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={},
                        limits=repo.QueueLimits(per_tenant=10_000_000, total=10_000_000))
        run("gateway: SubmitJob, idempotent replay", repo.submit_job, tenant="bench", request_id="r1",
            kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={})
        job = run("gateway: GetJob", repo.get_job, "bench", submitted.job.id)
        run("gateway: queue position (job at the back)", repo.queue_positions, [job])
        run("gateway: ListJobs (queued)", repo.list_jobs, "bench", state="QUEUED")
        attempt = run("worker: claim", attempts.claim_job, job.id, "w1", heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
        run("worker: heartbeat", attempts.heartbeat, attempt)
        run("worker: progress", attempts.record_progress, attempt, "denoise", 1, 8)
        run("worker: finish", attempts.finish_job, attempt, output_keys={})
        stale = run("setup", repo.submit_job, tenant="bench", request_id=None, kind="TEXT_TO_IMAGE",
                    params={"prompt": "p"}, input_keys={}).job
        run("setup", attempts.claim_job, stale.id, "w2", heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
        with Session() as s:
            s.execute(update(Job).where(Job.id == stale.id).values(heartbeat_at=utcnow() - timedelta(hours=1)))
            s.commit()
        run("reaper: stale leases", attempts.reap_stale, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, max_attempts=3)
        run("reaper: queued jobs whose message may be lost", repo.queued_before, utcnow() - timedelta(minutes=5))
        run("reaper: finished past retention", repo.finished_before, utcnow() - timedelta(days=1))
        run("autoscaler: backlog", repo.count_backlog)
        run(SCRAPE, lambda s: jobs_by_state(SimpleNamespace(sessions=lambda: s))())

        sequential = []
        with engine.connect() as conn:
            last = None
            for label, statement, parameters in captured:
                if statement.strip() in ("BEGIN", "COMMIT", "ROLLBACK"):
                    continue
                if label != last:
                    print(f"\n=== {label}")
                    last = label
                read = statement.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in statement.upper()
                plan = conn.exec_driver_sql(("EXPLAIN (ANALYZE, BUFFERS) " if read else "EXPLAIN ") + statement,
                                            parameters).scalars().all()
                conn.rollback()
                print(" ".join(statement.split())[:300])
                for line in plan:
                    print("    " + line)
                if label != SCRAPE and any("Seq Scan on jobs" in line for line in plan):
                    sequential.append(label)
        print(f"\n{args.backlog} queued and {args.finished} finished jobs in the table; sequential scans of jobs: "
              f"{sequential or 'none'}")
        return 1 if sequential else 0
    finally:
        if engine is not None:
            engine.dispose()
        drop_database(args.postgres_admin_url, name)


if __name__ == "__main__":
    raise SystemExit(main())
