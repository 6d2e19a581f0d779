"""``python -m services.webhooks``: the webhook dispatcher, delivering the outbox (issue 14).

It claims due deliveries (shared.webhooks.deliveries), up to `webhook_concurrency` tries in flight, and for
each: signs the event's body with every unretired secret of the tenant (Standard Webhooks: `webhook-id`, the
same on every try; `webhook-timestamp` of this try; `webhook-signature`), presigns the output URLs afresh
when the job succeeded, sends it (services.webhooks.sender) and records the outcome while its claim holds.
Idle, it polls every `webhook_poll_interval_s`; on PostgreSQL a commit that writes an event wakes it at once
(services.webhooks.wakeup). Any number of dispatchers may run: a try is claimed by one. On SIGTERM it claims
nothing more and waits for its tries in flight; one killed instead leaves its tries to be retried, with the
same id, once their lease ends. After each pass it records the pass in `webhook_pass_file` for `llada-healthcheck webhooks`.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Callable

from google.protobuf import json_format
from sqlalchemy.orm import sessionmaker

from services.webhooks import metrics as webhook_metrics
from services.webhooks.addresses import AddressPolicy
from services.webhooks.sender import WebhookSender
from services.webhooks.wakeup import listen
from shared.db import make_engine, session_factory
from shared.health_file import remove_health_file, write_health_file
from shared.job_message import job_json
from shared.logs import configure_logging
from shared.metrics_server import serve_metrics
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.settings import Settings, get_settings
from shared.webhooks.deliveries import Claim, Outcome, Policy, claim_due, give_up_exhausted, record_outcome
from shared.webhooks.secrets import signing_secrets
from shared.webhooks.signing import signed_headers

log = logging.getLogger("llada.webhooks")

Presign = Callable[[str], str]
# How long a tenant's signing secrets are reused before they are read again: a rotation or a retirement takes
# effect within this (as an API key's revocation does in the gateway), and a burst costs one read per tenant.
SECRETS_TTL_S = 5.0
# How often the rows past their tries or age are given up (a statement of its own, not one per pass).
GIVE_UP_EVERY_S = 1.0
# How soon an idle dispatcher notices its stop while it waits for the next poll or a wake-up.
STOP_CHECK_S = 0.2
# A pass file is stale after this many idle polls, plus room for a slow database.
MISSED_PASSES = 20
SLOW_PASS_ALLOWANCE_S = 60.0


def policy_from_settings(settings: Settings) -> Policy:
    return Policy(lease_s=2 * settings.webhook_timeout_s + 10.0, max_tries=settings.webhook_max_tries,
                  max_age_s=settings.webhook_max_age_s, backoff_s=settings.webhook_backoff_s,
                  backoff_cap_s=settings.webhook_backoff_cap_s)


class Dispatcher:
    def __init__(self, settings: Settings, sessions: sessionmaker, sender: WebhookSender, *,
                 presign: Presign | None = None, name: str | None = None, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.sessions = sessions
        self.sender = sender
        self.presign = presign
        # Unique per process even where host and pid repeat (a restarted container is pid 1 on the same pod).
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.policy = policy_from_settings(settings)
        self.rng = rng or random.Random()
        self.clock = clock  # the webhook-timestamp of each try (Unix seconds)
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, thread_name_prefix="webhook")
        self._idle = threading.Condition()  # guards _in_flight; notified as each try ends
        self._in_flight = 0  # only the pass loop adds to it, so the free slots it counts stay free
        self._secrets: dict[str, tuple[list[str], float]] = {}  # tenant -> (secrets, read at; time.monotonic)
        self._secrets_lock = threading.Lock()
        self._gave_up_at = float("-inf")

    def _db(self, fn, *args, **kwargs):
        with self.sessions() as s:
            return fn(s, *args, **kwargs)

    def run_once(self) -> tuple[int, int]:
        """Claim as many due deliveries as there are free slots and start their tries.
        Returns (tries started, free slots asked for)."""
        if time.monotonic() - self._gave_up_at >= GIVE_UP_EVERY_S:
            self._db(give_up_exhausted, self.policy)
            self._gave_up_at = time.monotonic()
        with self._idle:
            free = self.settings.webhook_concurrency - self._in_flight
        claims = self._db(claim_due, self.name, self.policy, limit=free) if free else []
        with self._idle:
            self._in_flight += len(claims)
        for claim in claims:
            self._pool.submit(self._try, claim)
        return len(claims), free

    def _try(self, claim: Claim) -> None:
        try:
            started = time.perf_counter()
            outcome = self.deliver(claim)
            webhook_metrics.record_try(claim.event, outcome.delivered, time.perf_counter() - started)
            recorded = self._db(record_outcome, claim, outcome, self.policy, self.rng)
            log.info("webhook try", extra={"job_id": claim.job_id, "webhook_id": claim.id, "event": claim.event,
                                           "try": claim.tries, "status_code": outcome.status_code,
                                           "delivered": outcome.delivered, "error": outcome.error or None,
                                           "recorded": recorded})
        except Exception:  # the database: the claim's lease runs out and the try is made again
            log.exception("webhook try failed to record", extra={"job_id": claim.job_id, "webhook_id": claim.id})
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def deliver(self, claim: Claim) -> Outcome:
        """One try: sign and send. Returns what came of it."""
        secrets = self.signing_secrets(claim.tenant)
        if not secrets:
            return Outcome(error=f"tenant {claim.tenant!r} has no webhook signing secret "
                                 "(llada-server webhook-secret create)")
        body = self.body(claim).encode()
        return self.sender.post(claim.url, body, signed_headers(secrets, claim.id, int(self.clock()), body))

    def signing_secrets(self, tenant: str) -> list[str]:
        with self._secrets_lock:
            cached = self._secrets.get(tenant)
        if cached is not None and time.monotonic() - cached[1] < SECRETS_TTL_S:
            return cached[0]
        secrets = self._db(signing_secrets, tenant)
        with self._secrets_lock:
            self._secrets[tenant] = (secrets, time.monotonic())
        return secrets

    def body(self, claim: Claim) -> str:
        """The event's Job, with output URLs signed for this try when the job succeeded (they expire)."""
        job = json_format.Parse(claim.body, pb.Job())
        if self.presign is not None:  # only a succeeded job has output objects
            expires = datetime.now(timezone.utc) + timedelta(seconds=self.settings.presign_expiry_s)
            for obj in job.outputs.objects:
                try:
                    obj.url = self.presign(obj.object_key)
                except Exception:  # expired or deleted since: the key stays, without a URL
                    log.warning("cannot presign a webhook's output", extra={"job_id": claim.job_id}, exc_info=True)
                    continue
                obj.url_expires_at.FromDatetime(expires)
        return job_json(job)

    def wait_for_slot(self, timeout_s: float) -> None:
        """Until a try in flight ends (its slot can take the next due row at once), at most `timeout_s`."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight < self.settings.webhook_concurrency, timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no try is in flight; False if some still are after `timeout_s`."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_flight, timeout_s)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def run_forever(dispatcher: Dispatcher, stop: threading.Event, *, grace_s: float) -> None:
    """Pass after pass until `stop`; then wait up to `grace_s` for the tries in flight."""
    settings = dispatcher.settings
    pass_file = settings.webhook_pass_file
    if pass_file is not None:
        remove_health_file(pass_file)
    interval = settings.webhook_poll_interval_s
    wake = threading.Event()
    listen(settings.database_url, wake, stop)
    while not stop.is_set():
        error = None
        started, asked = 0, 1
        try:
            started, asked = dispatcher.run_once()
        except Exception as err:  # a database outage: the next pass retries
            log.exception("webhook pass failed")
            error = f"last pass failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        webhook_metrics.PASSES.labels("ok" if error is None else "error").inc()
        if pass_file is not None:
            try:
                write_health_file(pass_file, stale_after_s=MISSED_PASSES * interval + SLOW_PASS_ALLOWANCE_S,
                                  ok=error is None, error=error, interval_s=interval)
            except OSError:
                log.warning("cannot write the dispatcher's pass file", exc_info=True)
        if asked == 0:  # every slot busy: go on as soon as one frees
            dispatcher.wait_for_slot(interval)
        elif started < asked:  # nothing more is due: until an event commits (PostgreSQL) or the next poll
            _wait(wake, stop, interval)
            wake.clear()
    if not dispatcher.wait_idle(grace_s):
        log.warning("stopping with webhook tries in flight: they are retried once their lease ends")
    dispatcher.close()
    if pass_file is not None:
        remove_health_file(pass_file)


def _wait(wake: threading.Event, stop: threading.Event, timeout_s: float) -> None:
    """Until `wake`, `stop` (seen within STOP_CHECK_S) or `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0 or wake.wait(min(left, STOP_CHECK_S)):
            return


def dispatcher_from_settings(settings: Settings) -> Dispatcher:
    from shared.objectstore import object_store_from_settings

    store = object_store_from_settings(settings)
    sender = WebhookSender(AddressPolicy(settings.webhook_allow_networks), timeout_s=settings.webhook_timeout_s,
                           ca_file=str(settings.webhook_ca_file) if settings.webhook_ca_file else None)
    return Dispatcher(settings, session_factory(make_engine(settings.database_url)), sender,
                      presign=lambda key: store.presigned_get(key, settings.presign_expiry_s))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--grace", type=float,
                        help="seconds to wait for tries in flight on SIGTERM (default: the try timeout + 5)")
    args = parser.parse_args(argv)
    configure_logging(service="webhooks")
    settings = get_settings()
    configure_logging(settings, service="webhooks")
    dispatcher = dispatcher_from_settings(settings)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("webhook dispatcher started", extra={"dispatcher": dispatcher.name})
    serve_metrics(webhook_metrics.REGISTRY, settings.webhook_metrics_port, settings.metrics_host)
    grace = settings.webhook_timeout_s + 5.0 if args.grace is None else args.grace
    run_forever(dispatcher, stop, grace_s=grace)
    return 0
