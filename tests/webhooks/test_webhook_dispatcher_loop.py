"""The dispatcher's pass loop and its slots (services.webhooks.dispatcher): with every slot busy a pass claims
nothing and the loop waits for a slot, not for the poll; a stop with a try still in flight returns after the grace
and leaves that try to its lease; rows past their tries are given up on the first pass and then once a second;
each pass is recorded in the pass file and the metrics, a failed one with its reason; each try in the metrics; a
tenant without a signing secret is told how to make one; a pass that failed without a message, by its error's type.
Tries are held by a receiver that does not answer until the test releases it."""

from __future__ import annotations

import logging
import threading
import time
import types

import pytest
from sqlalchemy import text, update

from services.webhooks import dispatcher as dispatcher_module
from services.webhooks import metrics as webhook_metrics
from services.webhooks.dispatcher import (GIVE_UP_EVERY_S, MISSED_PASSES, SLOW_PASS_ALLOWANCE_S, Dispatcher,
                                         run_forever)
from shared.health_file import read_health_file
from shared.webhooks.subscription import WebhookSubscription
from shared import repository as repo
from shared.db.models import WebhookDelivery
from tests.webhooks.conftest import TENANT, WebhookWorld
from tests.webhooks.test_webhook_dispatcher import rows
from tests.deadlines import deadline_s

DEADLINE_S = deadline_s(10)


def finished_job(world, receiver) -> str:
    """A job whose `completed` event is due now."""
    job = world.submit(receiver.url())
    world.db(repo.request_cancel, TENANT, job.id)
    return job.id


def tries_seen(event: str) -> tuple[float, float, float]:
    """Delivered tries of `event` so far, and the count and sum of their durations."""
    def value(name, labels):
        return webhook_metrics.REGISTRY.get_sample_value(name, labels) or 0.0
    return (value("llada_webhook_tries_total", {"event": event, "result": "delivered"}),
            value("llada_webhook_try_seconds_count", {"event": event}),
            value("llada_webhook_try_seconds_sum", {"event": event}))


def test_with_every_slot_busy_a_pass_claims_nothing_and_a_freed_slot_ends_the_wait(tmp_path, receiver):
    world = WebhookWorld(tmp_path, webhook_concurrency=1)
    receiver.release.clear()
    tries_before = tries_seen("completed")
    first, second = finished_job(world, receiver), finished_job(world, receiver)
    dispatcher = world.dispatcher()
    try:
        assert dispatcher.run_once() == (1, 1)  # one try started, one slot asked for
        receiver.wait_for(1, timeout_s=DEADLINE_S)
        assert dispatcher.run_once() == (0, 0)  # no slot free: nothing asked of the database
        assert not dispatcher.wait_idle(0.05)
        waiter = threading.Thread(target=dispatcher.wait_for_slot, args=(60,))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive(), "wait_for_slot returned with every slot still busy"

        receiver.release.set()
        waiter.join(DEADLINE_S)  # far less than its 60 s: the freed slot ended it
        assert not waiter.is_alive()
        assert dispatcher.wait_idle(DEADLINE_S)
        assert dispatcher.run_once() == (1, 1)
        assert dispatcher.wait_idle(DEADLINE_S)
    finally:
        receiver.release.set()
        dispatcher.close()
    assert sorted(r.job_id for r in rows(world) if r.delivery_state == "delivered") == sorted([first, second])
    delivered, timed, seconds = (after - before for after, before in zip(tries_seen("completed"), tries_before))
    assert (delivered, timed) == (2, 2) and 0 < seconds < 2 * DEADLINE_S  # each try as long as it took


def test_a_tenant_without_a_signing_secret_gets_nothing_and_its_delivery_says_what_to_do(tmp_path, receiver):
    world = WebhookWorld(tmp_path)
    job = world.db(repo.submit_job, tenant="unsigned", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                   input_keys={}, webhook=WebhookSubscription(receiver.url(), ("completed",))).job
    world.db(repo.request_cancel, "unsigned", job.id)
    dispatcher = world.dispatcher()
    try:
        assert dispatcher.run_once() == (1, world.settings.webhook_concurrency)
        assert dispatcher.wait_idle(DEADLINE_S)
    finally:
        dispatcher.close()
    [delivery] = rows(world, job.id)
    assert delivery.error == "tenant 'unsigned' has no webhook signing secret (llada-server webhook-secret create)"
    assert receiver.requests == []


@pytest.mark.parametrize("concurrency", [1, 4])  # every slot busy (the loop waits for one), or some free
def test_a_stop_with_a_try_in_flight_returns_after_the_grace_and_leaves_the_try_to_its_lease(
        tmp_path, receiver, caplog, concurrency):
    # The held try would outlast any test deadline.
    world = WebhookWorld(tmp_path, webhook_timeout_s=60, webhook_concurrency=concurrency)
    receiver.release.clear()
    job_id = finished_job(world, receiver)
    dispatcher, stop = world.dispatcher(), threading.Event()
    loop = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 0.2})
    try:
        with caplog.at_level(logging.WARNING, logger="llada.webhooks"):
            loop.start()
            receiver.wait_for(1, timeout_s=DEADLINE_S)
            stop.set()
            loop.join(DEADLINE_S)
            assert not loop.is_alive(), "the loop waited for the try instead of its grace"
    finally:
        receiver.release.set()
        loop.join(DEADLINE_S)
    assert "stopping with webhook tries in flight: they are retried once their lease ends" in caplog.messages
    assert dispatcher.wait_idle(DEADLINE_S)  # the try itself went on, in its pool thread
    [delivery] = rows(world, job_id)
    assert delivery.tries == 1


def exhaust(world, job_id: str) -> None:
    """The job's delivery is due but has had all its tries (a dispatcher died during the last)."""
    world.db(lambda s: (s.execute(update(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                                  .values(tries=world.settings.webhook_max_tries)), s.commit()))


def test_rows_past_their_tries_are_given_up_on_the_first_pass_then_at_most_once_a_second(
        tmp_path, receiver, monkeypatch):
    clock = types.SimpleNamespace(monotonic=lambda: now[0], perf_counter=lambda: now[0])
    now = [0.0]
    monkeypatch.setattr(dispatcher_module, "time", clock)
    world = WebhookWorld(tmp_path)
    dispatcher = world.dispatcher()
    first, second = finished_job(world, receiver), finished_job(world, receiver)
    exhaust(world, first)
    exhaust(world, second)

    def state(job_id):
        [delivery] = rows(world, job_id)
        return delivery.delivery_state

    try:
        dispatcher.run_once()
        assert state(first) == state(second) == "failed"
        third = finished_job(world, receiver)
        exhaust(world, third)
        now[0] = GIVE_UP_EVERY_S - 0.001
        dispatcher.run_once()
        assert state(third) == "pending"
        now[0] = GIVE_UP_EVERY_S
        dispatcher.run_once()
        assert state(third) == "failed"
    finally:
        dispatcher.close()
    [delivery] = rows(world, third)
    assert delivery.error.endswith(f"(given up: {world.settings.webhook_max_tries} tries or "
                                   f"{world.settings.webhook_max_age_s:g} s)")
    assert receiver.requests == []


def test_each_pass_is_recorded_and_counted_a_failed_one_says_why_and_neither_comes_faster_than_the_poll(
        tmp_path):
    pass_file = tmp_path / "webhooks.pass"
    interval = 0.2
    world = WebhookWorld(tmp_path, webhook_pass_file=pass_file, webhook_poll_interval_s=interval)
    dispatcher, stop = world.dispatcher(), threading.Event()
    before = {outcome: webhook_metrics.PASSES.labels(outcome)._value.get() for outcome in ("ok", "error")}
    loop = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 1})
    loop.start()
    try:
        ok = wait_for_record(pass_file, lambda facts: facts["ok"])
        assert ok["error"] is None and ok["interval_s"] == interval
        assert ok["stale_after_s"] == MISSED_PASSES * interval + SLOW_PASS_ALLOWANCE_S
        assert webhook_metrics.PASSES.labels("ok")._value.get() > before["ok"]
        # Idle (nothing due, SQLite: no wake-up), the next pass comes after the poll interval, not at once.
        following = wait_for_record(pass_file, lambda facts: facts["written_at"] > ok["written_at"])
        assert following["written_at"] - ok["written_at"] >= interval * 0.9

        world.db(lambda s: (s.execute(text("DROP TABLE webhook_deliveries")), s.commit()))
        failed = wait_for_record(pass_file, lambda facts: not facts["ok"])
        assert failed["error"] == ("last pass failed: OperationalError: (sqlite3.OperationalError) "
                                   "no such table: webhook_deliveries")
        assert webhook_metrics.PASSES.labels("error")._value.get() > before["error"]
        # A failing database is not retried in a tight loop either.
        again = wait_for_record(pass_file, lambda facts: facts["written_at"] > failed["written_at"])
        assert not again["ok"] and again["written_at"] - failed["written_at"] >= interval * 0.9
    finally:
        stop.set()
        loop.join(DEADLINE_S)
    assert not loop.is_alive() and not pass_file.exists()  # a stopped dispatcher leaves no pass to trust


def wait_for_record(pass_file, condition) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        record = read_health_file(pass_file)
        if record is not None and condition(record.facts):
            return record.facts
        assert time.monotonic() < deadline, record
        time.sleep(0.01)


class SilentlyFailingDispatcherDouble(Dispatcher):
    """A dispatcher whose every pass fails with an error that has no text (a connection reset, say)."""

    def run_once(self):
        raise ConnectionResetError()


def test_a_pass_that_failed_without_a_message_is_recorded_by_its_error_type(tmp_path):
    pass_file = tmp_path / "webhooks.pass"
    world = WebhookWorld(tmp_path, webhook_pass_file=pass_file)
    dispatcher = SilentlyFailingDispatcherDouble(world.settings, world.sessions, world.dispatcher().sender)
    stop = threading.Event()
    loop = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 1})
    loop.start()
    try:
        failed = wait_for_record(pass_file, lambda facts: not facts["ok"])
    finally:
        stop.set()
        loop.join(DEADLINE_S)
    assert failed["error"] == "last pass failed: ConnectionResetError: "


def test_a_backlog_is_delivered_slot_after_slot_without_waiting_for_the_poll(tmp_path, receiver):
    # One slot, and a poll far longer than the deadline (SQLite: no wake-up on commit): only going on at once
    # after a pass that filled every slot delivers three events in time.
    world = WebhookWorld(tmp_path, webhook_concurrency=1, webhook_poll_interval_s=60)
    jobs = [finished_job(world, receiver) for _ in range(3)]
    dispatcher, stop = world.dispatcher(), threading.Event()
    loop = threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 1})
    loop.start()
    try:
        receiver.wait_for(3, timeout_s=DEADLINE_S)
    finally:
        stop.set()
        loop.join(DEADLINE_S)
    assert sorted(r.job_id for r in rows(world) if r.delivery_state == "delivered") == sorted(jobs)
