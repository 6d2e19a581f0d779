"""Webhook latency: from a job's terminal state committing to its receiver getting the `completed` request,
next to a bare signed POST to the same receiver as the floor.

    .venv/bin/python bench/webhook_latency.py [--jobs 200] [--dispatchers 2]
        [--postgres-admin-url postgresql://postgres@127.0.0.1:5432/postgres]

The production path on loopback: a throwaway PostgreSQL database (created, migrated, dropped here), jobs
with a webhook asking for `completed`, the outbox row written in the transaction that cancels each one, and
`--dispatchers` dispatchers (services.webhooks.dispatcher, default settings but http and loopback allowed)
in this process delivering to a receiver on 127.0.0.1. Two runs: a burst (every job ends at once: the
backlog a dispatcher meets after a busy moment) and one at a time (the idle latency, bounded below by the
dispatcher's poll interval). The floor is the sender alone: the same signed POST, sent directly.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from services.webhooks.addresses import AddressPolicy  # noqa: E402
from services.webhooks.dispatcher import Dispatcher, run_forever  # noqa: E402
from services.webhooks.sender import WebhookSender  # noqa: E402
from shared import repository as repo  # noqa: E402
from shared.db import make_engine, session_factory, upgrade  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.webhooks.secrets import create_secret  # noqa: E402
from shared.webhooks.signing import signed_headers  # noqa: E402
from shared.webhooks.subscription import WebhookSubscription  # noqa: E402

TENANT = "bench"


class Receiver:
    """Notes when each job's request arrives (time.monotonic), answers 204."""

    def __init__(self):
        self.arrived: dict[str, float] = {}
        self.done = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                at = time.monotonic()
                job_id = json.loads(body).get("id", "")
                with receiver.done:
                    receiver.arrived.setdefault(job_id, at)
                    receiver.done.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, job_ids, timeout_s: float) -> None:
        with self.done:
            if not self.done.wait_for(lambda: all(j in self.arrived for j in job_ids), timeout_s):
                raise SystemExit(f"only {sum(j in self.arrived for j in job_ids)} of {len(job_ids)} webhooks "
                                 f"arrived in {timeout_s:.0f} s")


def percentiles(seconds: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[98] * 1000


def measure(sessions, receiver: Receiver, jobs: int, *, burst: bool, pause_s: float) -> list[float]:
    with sessions() as s:
        ids = [repo.submit_job(s, tenant=TENANT, request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                               input_keys={}, webhook=WebhookSubscription(receiver.url, ("completed",))).job.id
               for _ in range(jobs)]
    ended: dict[str, float] = {}
    with sessions() as s:
        for job_id in ids:
            repo.request_cancel(s, TENANT, job_id)  # commits the CANCELLED state and its outbox row
            ended[job_id] = time.monotonic()
            if not burst:
                receiver.wait([job_id], 30)
                time.sleep(random.uniform(0, pause_s))  # arrive at any point of the dispatcher's poll
    receiver.wait(ids, 120)
    return [receiver.arrived[j] - ended[j] for j in ids]


def floor(receiver: Receiver, secret: str, n: int) -> list[float]:
    sender = WebhookSender(AddressPolicy(["127.0.0.0/8"]), timeout_s=10)
    times = []
    for _ in range(n):
        job_id = str(uuid.uuid4())
        body = json.dumps({"id": job_id, "state": "JOB_STATE_CANCELLED"}).encode()
        started = time.monotonic()
        sender.post(receiver.url, body, signed_headers([secret], "msg_" + job_id, int(time.time()), body))
        times.append(receiver.arrived[job_id] - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per run (the burst's size)")
    parser.add_argument("--dispatchers", type=int, default=2)
    parser.add_argument("--postgres-admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    db_name = f"llada_bench_webhooks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    admin_url = psycopg.conninfo.conninfo_to_dict(args.postgres_admin_url)
    database_url = (f"postgresql+psycopg://{admin_url.get('user', 'postgres')}@{admin_url.get('host', '127.0.0.1')}"
                    f":{admin_url.get('port', 5432)}/{db_name}")
    stop = threading.Event()
    try:
        settings = Settings(database_url=database_url, webhook_allow_http=True,
                            webhook_allow_networks=["127.0.0.0/8"])
        upgrade(database_url)
        sessions = session_factory(make_engine(database_url))
        with sessions() as s:
            secret = create_secret(s, TENANT)
        receiver = Receiver()
        sender = WebhookSender(AddressPolicy(settings.webhook_allow_networks), timeout_s=settings.webhook_timeout_s)
        threads = [threading.Thread(target=run_forever, args=(Dispatcher(settings, sessions, sender), stop),
                                    kwargs={"grace_s": 5}, daemon=True) for _ in range(args.dispatchers)]
        for thread in threads:
            thread.start()
        measure(sessions, receiver, 10, burst=True, pause_s=0)  # warm-up: connections, caches
        base50, base99 = percentiles(floor(receiver, secret, args.jobs))
        burst50, burst99 = percentiles(measure(sessions, receiver, args.jobs, burst=True, pause_s=0))
        idle = min(args.jobs, 50)
        one50, one99 = percentiles(measure(sessions, receiver, idle, burst=False,
                                           pause_s=settings.webhook_poll_interval_s))
    finally:
        stop.set()
        with psycopg.connect(args.postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    print(f"webhook latency, terminal state committed -> receiver's request; {args.dispatchers} dispatchers "
          f"in-process, PostgreSQL, poll interval {settings.webhook_poll_interval_s:g} s, receiver on loopback")
    print(f"  floor (a bare signed POST), {args.jobs} requests: p50 {base50:7.1f} ms  p99 {base99:7.1f} ms")
    print(f"  burst of {args.jobs} jobs ending at once:     p50 {burst50:7.1f} ms  p99 {burst99:7.1f} ms  "
          f"(p50 {burst50 / base50:.0f}x the floor)")
    print(f"  {idle} jobs ending one at a time:       p50 {one50:7.1f} ms  p99 {one99:7.1f} ms  "
          f"(p50 {one50 / base50:.0f}x the floor)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
