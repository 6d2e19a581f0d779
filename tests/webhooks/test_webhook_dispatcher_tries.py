"""One dispatcher's tries (services.webhooks.dispatcher): its claim's lease from the try timeout, a thread for each
of its `webhook_concurrency` slots, a name of its own on the rows it claims, output URLs signed afresh for each try
(one that cannot be signed leaves the others signed), and a tenant's signing secrets read at most once per
SECRETS_TTL_S — a rotation bites within it. Times are read from a clock the test moves where they matter."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import types
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event

from client import WebhookVerificationError, verify_webhook
from services.webhooks import dispatcher as dispatcher_module
from services.webhooks.dispatcher import SECRETS_TTL_S, Dispatcher, policy_from_settings
from shared import attempts
from shared import repository as repo
from shared.settings import Settings
from shared.webhooks.deliveries import Claim, Policy
from shared.webhooks.secrets import retire_old_secrets, rotate_secret
from tests.deadlines import deadline_s
from tests.webhooks.conftest import TENANT, WebhookWorld
from tests.webhooks.test_webhook_dispatcher import rows

DEADLINE_S = deadline_s(10)


def finished_job(world, receiver) -> str:
    job = world.submit(receiver.url())
    world.db(repo.request_cancel, TENANT, job.id)
    return job.id


def test_a_claim_outlasts_the_slowest_try_and_the_rest_of_the_policy_is_the_settings(tmp_path):
    settings = Settings(data_dir=tmp_path, webhook_timeout_s=7, webhook_max_tries=4, webhook_max_age_s=600,
                        webhook_backoff_s=2, webhook_backoff_cap_s=60)
    # A try waits up to the timeout to connect and again to read: its claim lasts both, plus room to record it.
    assert policy_from_settings(settings) == Policy(lease_s=24.0, max_tries=4, max_age_s=600, backoff_s=2,
                                                    backoff_cap_s=60)


def test_every_slot_has_its_own_thread(tmp_path, receiver):
    slots = 8  # more than a thread pool's default on a small machine
    world = WebhookWorld(tmp_path, webhook_concurrency=slots, webhook_timeout_s=60)
    receiver.release.clear()
    for _ in range(slots):
        finished_job(world, receiver)
    dispatcher = world.dispatcher()
    try:
        assert dispatcher.run_once() == (slots, slots)
        assert len(receiver.wait_for(slots, timeout_s=DEADLINE_S)) == slots  # all held at once
    finally:
        receiver.release.set()
        dispatcher.wait_idle(DEADLINE_S)
        dispatcher.close()


def test_a_dispatcher_claims_under_a_name_of_its_own(tmp_path, receiver):
    world = WebhookWorld(tmp_path)
    receiver.release.clear()
    job_id = finished_job(world, receiver)
    one, other = (Dispatcher(world.settings, world.sessions, world.dispatcher().sender) for _ in range(2))
    assert re.fullmatch(rf"{re.escape(socket.gethostname())}:{os.getpid()}:[0-9a-f]{{8}}", one.name)
    assert one.name != other.name  # the same host and pid (a restarted container) still differ
    try:
        one.run_once()
        receiver.wait_for(1, timeout_s=DEADLINE_S)
        [delivery] = rows(world, job_id)
        assert delivery.claimed_by == one.name  # while its try is in flight
    finally:
        receiver.release.set()
        one.wait_idle(DEADLINE_S)
        for dispatcher in (one, other):
            dispatcher.close()


def succeeded_claim(world, keys: list[str]) -> Claim:
    job = world.submit("https://receiver.example/hook")
    world.db(attempts.finish_job, world.claim(job.id), output_keys={key.rsplit("/", 1)[1]: key for key in keys})
    [row] = [r for r in rows(world, job.id) if r.event == "completed"]
    return Claim(id=row.id, job_id=job.id, tenant=TENANT, event=row.event, url=row.url, body=row.body, tries=1,
                 created_at=row.created_at, dispatcher="d1")


@pytest.fixture
def tokyo_time(monkeypatch):
    """A machine whose local time is not UTC: a naive "now" would be nine hours off."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_output_urls_are_signed_for_each_try_and_one_that_cannot_be_signed_leaves_the_others(tmp_path,
                                                                                             tokyo_time):
    world = WebhookWorld(tmp_path, presign_expiry_s=900)

    def presign(key):
        if key.endswith("gone.png"):
            raise FileNotFoundError(key)
        return f"https://objects.example/{key}?signed"

    claim = succeeded_claim(world, ["results/j/1/gone.png", "results/j/1/image.png"])
    before = datetime.now(timezone.utc)
    body = json.loads(world.dispatcher(presign=presign).body(claim))

    gone, image = sorted(body["outputs"]["objects"], key=lambda o: o["objectKey"])
    assert gone["objectKey"] == "results/j/1/gone.png" and "url" not in gone and "urlExpiresAt" not in gone
    assert image["url"] == "https://objects.example/results/j/1/image.png?signed"
    expires = datetime.fromisoformat(image["urlExpiresAt"].replace("Z", "+00:00"))
    assert before + timedelta(seconds=900) <= expires <= datetime.now(timezone.utc) + timedelta(seconds=900)


def test_signing_secrets_are_read_again_once_their_ttl_ran_out(tmp_path, receiver, monkeypatch):
    now = [100.0]
    monkeypatch.setattr(dispatcher_module, "time", types.SimpleNamespace(monotonic=lambda: now[0],
                                                                         perf_counter=time.perf_counter))
    world = WebhookWorld(tmp_path)
    dispatcher = world.dispatcher()
    old = world.secret

    def deliver_one_at(moment: float):
        now[0] = moment
        finished_job(world, receiver)
        started, _ = dispatcher.run_once()
        assert started == 1 and dispatcher.wait_idle(DEADLINE_S)
        return receiver.requests[-1]

    try:
        first = deliver_one_at(100.0)
        assert verify_webhook(old, first.headers, first.body)
        new = world.db(rotate_secret, TENANT)
        world.db(retire_old_secrets, TENANT)  # from now on, only `new` may sign
        cached = deliver_one_at(100.0 + SECRETS_TTL_S - 0.001)
        assert verify_webhook(old, cached.headers, cached.body)  # within the TTL: the secrets read before
        with pytest.raises(WebhookVerificationError):
            verify_webhook(new, cached.headers, cached.body)
        fresh = deliver_one_at(100.0 + SECRETS_TTL_S)
        assert verify_webhook(new, fresh.headers, fresh.body)
    finally:
        dispatcher.close()


def test_with_every_slot_busy_a_pass_asks_nothing_of_the_database(tmp_path, receiver, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "time", types.SimpleNamespace(monotonic=lambda: 0.0,
                                                                         perf_counter=time.perf_counter))
    world = WebhookWorld(tmp_path, webhook_concurrency=1, webhook_timeout_s=60)
    receiver.release.clear()
    finished_job(world, receiver)
    dispatcher = world.dispatcher()
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = world.sessions.kw["bind"]
    try:
        assert dispatcher.run_once() == (1, 1)  # the give-up and the claim, at clock 0
        receiver.wait_for(1, timeout_s=DEADLINE_S)
        event.listen(engine, "before_cursor_execute", count)
        try:
            assert dispatcher.run_once() == (0, 0)  # the give-up is not due, and no slot is free
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert statements == []
    finally:
        receiver.release.set()
        dispatcher.wait_idle(DEADLINE_S)
        dispatcher.close()
