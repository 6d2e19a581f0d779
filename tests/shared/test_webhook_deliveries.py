"""A dispatcher's claims and outcomes (shared.webhooks.deliveries): one try per claim, however many dispatchers
ask; an outcome counts only while its claim holds; backoff with jitter; giving up after the bounded tries or
age, saying why — on SQLite and Postgres."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import attempts
from shared import repository as repo
from shared.db.models import WebhookDelivery
from shared.db.types import utcnow
from shared.webhooks.deliveries import (Outcome, Policy, claim_due, deliveries_of, give_up_exhausted,
                                        purge_settled, record_outcome)
from shared.webhooks.subscription import WebhookSubscription

POLICY = Policy(lease_s=30, max_tries=3, max_age_s=3600, backoff_s=2, backoff_cap_s=10)
RNG = random.Random(1)


def completed_event(s) -> str:
    """A job that ended with a webhook asking for `completed`: its one pending row's id."""
    job = repo.submit_job(s, tenant="acme", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                          input_keys={}, webhook=WebhookSubscription("https://h.example/x", ("completed",))).job
    attempts.fail_job(s, attempts.claim_job(s, job.id, "w", heartbeat_timeout_s=60), code="X", message="m")
    return s.scalars(select(WebhookDelivery.id).where(WebhookDelivery.job_id == job.id)).one()


def row(s, delivery_id) -> WebhookDelivery:
    found = s.get(WebhookDelivery, delivery_id, populate_existing=True)
    s.commit()
    return found


def make_due(s, delivery_id, *, lease_over=False) -> None:
    """The backoff (and, with lease_over, the claim's lease) has run out: aged in the row, not slept for."""
    values = {"next_try_at": utcnow() - timedelta(seconds=1)}
    if lease_over:
        values["claimed_until"] = utcnow() - timedelta(seconds=1)
    s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values))
    s.commit()


def test_a_claim_is_one_try_and_a_2xx_delivers(s):
    delivery_id = completed_event(s)
    [claim] = claim_due(s, "d1", POLICY, limit=10)
    assert (claim.id, claim.tries, claim.dispatcher, claim.event) == (delivery_id, 1, "d1", "completed")
    assert claim_due(s, "d2", POLICY, limit=10) == []  # claimed: nobody else tries it meanwhile
    assert record_outcome(s, claim, Outcome(204), POLICY, RNG)
    done = row(s, delivery_id)
    assert (done.delivery_state, done.status_code, done.error, done.claimed_by) == ("delivered", 204, None, None)
    assert done.finished_at is not None and claim_due(s, "d2", POLICY, limit=10) == []


def test_a_failed_try_waits_its_backoff_then_is_retried_with_the_same_id(s):
    delivery_id = completed_event(s)
    [first] = claim_due(s, "d1", POLICY, limit=10)
    assert record_outcome(s, first, Outcome(500, "answered HTTP 500"), POLICY, RNG)
    pending = row(s, delivery_id)
    assert (pending.delivery_state, pending.status_code, pending.error) == ("pending", 500, "answered HTTP 500")
    assert claim_due(s, "d1", POLICY, limit=10) == []  # not due before its backoff
    make_due(s, delivery_id)
    [second] = claim_due(s, "d2", POLICY, limit=10)
    assert (second.id, second.tries) == (delivery_id, 2)


def test_out_of_tries_it_fails_saying_why(s):
    delivery_id = completed_event(s)
    for n in range(1, POLICY.max_tries + 1):
        make_due(s, delivery_id)
        [claim] = claim_due(s, "d1", POLICY, limit=10)
        assert claim.tries == n
        record_outcome(s, claim, Outcome(0, "ConnectTimeoutError: timed out"), POLICY, RNG)
    failed = row(s, delivery_id)
    assert failed.delivery_state == "failed" and failed.tries == POLICY.max_tries
    assert failed.error == f"ConnectTimeoutError: timed out (given up after {POLICY.max_tries} tries)"
    make_due(s, delivery_id)
    assert claim_due(s, "d1", POLICY, limit=10) == []


def test_a_final_outcome_fails_at_once(s):
    delivery_id = completed_event(s)
    [claim] = claim_due(s, "d1", POLICY, limit=10)
    record_outcome(s, claim, Outcome(error="refused: h.example resolves to 10.0.0.1", final=True), POLICY, RNG)
    assert (row(s, delivery_id).delivery_state, row(s, delivery_id).tries) == ("failed", 1)


def test_too_old_to_retry_it_fails(s):
    delivery_id = completed_event(s)
    [claim] = claim_due(s, "d1", POLICY, limit=10)
    young = Policy(lease_s=30, max_tries=10, max_age_s=0.5, backoff_s=2, backoff_cap_s=10)
    record_outcome(s, claim, Outcome(503, "answered HTTP 503"), young, RNG)
    assert row(s, delivery_id).error == "answered HTTP 503 (given up after 0.5 s)"


def test_a_dispatcher_that_died_mid_try_leaves_it_to_the_next_whose_outcome_alone_counts(s):
    delivery_id = completed_event(s)
    [dead] = claim_due(s, "d1", POLICY, limit=10)
    assert claim_due(s, "d2", POLICY, limit=10) == []  # its lease still runs
    make_due(s, delivery_id, lease_over=True)
    [retry] = claim_due(s, "d2", POLICY, limit=10)
    assert (retry.id, retry.tries) == (delivery_id, 2)
    assert not record_outcome(s, dead, Outcome(200), POLICY, RNG)  # the stalled one wakes: recorded nothing
    assert row(s, delivery_id).delivery_state == "pending"
    assert record_outcome(s, retry, Outcome(200), POLICY, RNG)
    assert row(s, delivery_id).delivery_state == "delivered"


def test_a_stale_claim_is_fenced_even_against_its_own_dispatchers_next_claim(s):
    delivery_id = completed_event(s)
    [stale] = claim_due(s, "d1", POLICY, limit=10)
    make_due(s, delivery_id, lease_over=True)
    [fresh] = claim_due(s, "d1", POLICY, limit=10)  # a restarted dispatcher with the same name
    assert not record_outcome(s, stale, Outcome(500, "answered HTTP 500"), POLICY, RNG)
    assert record_outcome(s, fresh, Outcome(200), POLICY, RNG)
    assert (row(s, delivery_id).delivery_state, row(s, delivery_id).tries) == ("delivered", 2)


def test_a_last_try_whose_dispatcher_died_is_given_up(s):
    delivery_id = completed_event(s)
    s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
              .values(tries=POLICY.max_tries, claimed_by="gone", claimed_until=utcnow() - timedelta(seconds=1)))
    s.commit()
    assert claim_due(s, "d1", POLICY, limit=10) == []
    assert give_up_exhausted(s, POLICY) == 1
    failed = row(s, delivery_id)
    assert failed.delivery_state == "failed"
    assert failed.error == f"its dispatcher stopped before an answer (given up: {POLICY.max_tries} tries or 3600 s)"


def test_concurrent_dispatchers_claim_each_try_once(Session):
    with Session() as s:
        ids = {completed_event(s) for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def dispatcher(name):
        with Session() as s:
            barrier.wait()
            for _ in range(6):
                got = claim_due(s, name, POLICY, limit=2)
                with lock:
                    claimed.extend(c.id for c in got)

    threads = [threading.Thread(target=dispatcher, args=(f"d{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(ids)  # every row once: none twice, none missed


@pytest.mark.parametrize("tries, low, high", [(1, 1, 2), (2, 2, 4), (3, 4, 8), (4, 5, 10), (9, 5, 10)])
def test_backoff_doubles_to_its_cap_with_half_of_it_random(tries, low, high):
    delays = [POLICY.delay_after(tries, random.Random(seed)) for seed in range(200)]
    assert low <= min(delays) and max(delays) <= high and max(delays) - min(delays) > (high - low) / 2


def test_getjob_lists_the_newest_deliveries_oldest_first(s):
    delivery_id = completed_event(s)
    job_id = row(s, delivery_id).job_id
    assert [d.id for d in deliveries_of(s, job_id)] == [delivery_id]
    assert deliveries_of(s, job_id, limit=0) == []


def test_settled_deliveries_past_retention_are_purged_and_pending_ones_kept(s):
    delivered, failed, pending = completed_event(s), completed_event(s), completed_event(s)
    claims = {c.id: c for c in claim_due(s, "d1", POLICY, limit=10)}
    record_outcome(s, claims[delivered], Outcome(200), POLICY, RNG)
    record_outcome(s, claims[failed], Outcome(error="refused", final=True), POLICY, RNG)
    record_outcome(s, claims[pending], Outcome(500, "answered HTTP 500"), POLICY, RNG)
    assert purge_settled(s, utcnow() - timedelta(seconds=60)) == 0  # settled just now: within retention
    assert purge_settled(s, utcnow() + timedelta(seconds=1)) == 2
    assert [r.id for r in s.scalars(select(WebhookDelivery))] == [pending]
