"""The dispatcher's pass and its slots (services.webhooks.dispatcher): with every slot busy a pass claims nothing
and the loop waits for a slot, not for the poll; a stop with a try still in flight returns after the grace and
leaves that try to its lease; rows past their tries are given up on the first pass and then once a second.
Tries are held by a receiver that does not answer until the test releases it."""

from __future__ import annotations

import logging
import threading
import types

from sqlalchemy import update

from services.webhooks import dispatcher as dispatcher_module
from services.webhooks.dispatcher import GIVE_UP_EVERY_S, run_forever
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


def test_with_every_slot_busy_a_pass_claims_nothing_and_a_freed_slot_ends_the_wait(tmp_path, receiver):
    world = WebhookWorld(tmp_path, webhook_concurrency=1)
    receiver.release.clear()
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


def test_a_stop_with_a_try_in_flight_returns_after_the_grace_and_leaves_the_try_to_its_lease(
        tmp_path, receiver, caplog):
    world = WebhookWorld(tmp_path, webhook_timeout_s=60)  # the held try would outlast any test deadline
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
