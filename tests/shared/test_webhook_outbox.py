"""The webhook outbox (shared.webhooks.outbox): an event row exactly when its state change commits, for the
events the job's webhook asked for; progress throttled with the newest snapshot — on SQLite and Postgres."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select, update

from shared import attempts
from shared import repository as repo
from shared.db.models import Job, WebhookDelivery
from shared.db.types import utcnow
from shared.jobs import JobState
from shared.transitions import shift
from shared.webhooks.deliveries import Policy, claim_due
from shared.webhooks.outbox import PROGRESS_INTERVAL_S
from shared.webhooks.subscription import WebhookSubscription

URL = "https://hooks.example.com/llada"
ALL = ("started", "progress", "completed")
POLICY = Policy(lease_s=30, max_tries=3, max_age_s=3600, backoff_s=1, backoff_cap_s=10)


def submit(s, events=ALL, *, url=URL):
    webhook = WebhookSubscription(url, tuple(events)) if events is not None else None
    return repo.submit_job(s, tenant="acme", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                           input_keys={}, webhook=webhook).job


def claim(s, job_id):
    return attempts.claim_job(s, job_id, "w1", heartbeat_timeout_s=60)


def events_of(s, job_id) -> list[tuple[str, str]]:
    """(event, the body's state) of the job's rows, in order."""
    rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                     .order_by(WebhookDelivery.created_at, WebhookDelivery.next_try_at)).all()
    s.commit()
    return [(row.event, json.loads(row.body)["state"]) for row in rows]


def test_each_subscribed_change_writes_one_row_with_the_job_as_it_was(s):
    job = submit(s, ("started", "completed"))
    attempt = claim(s, job.id)
    assert events_of(s, job.id) == [("started", "JOB_STATE_RUNNING")]
    attempts.finish_job(s, attempt, output_keys={"image": f"results/{job.id}/1/image.png"})
    assert events_of(s, job.id) == [("started", "JOB_STATE_RUNNING"), ("completed", "JOB_STATE_SUCCEEDED")]
    row = s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "completed")).one()
    body = json.loads(row.body)
    assert (row.id.startswith("msg_"), row.tenant, row.url, row.delivery_state, row.tries) == (
        True, "acme", URL, "pending", 0)
    assert body["id"] == job.id and body["outputs"]["objects"][0]["objectKey"] == f"results/{job.id}/1/image.png"
    assert "webhook" in body and "webhookDeliveries" not in body


def test_no_row_for_a_job_without_a_webhook_or_for_an_event_not_asked_for(s):
    plain = submit(s, None)
    attempts.finish_job(s, claim(s, plain.id), output_keys={})
    completed_only = submit(s, ("completed",))
    attempt = claim(s, completed_only.id)
    attempts.record_progress(s, attempt, "denoise", 1, 8)
    assert events_of(s, plain.id) == [] and events_of(s, completed_only.id) == []
    attempts.finish_job(s, attempt, output_keys={})
    assert events_of(s, completed_only.id) == [("completed", "JOB_STATE_SUCCEEDED")]


def test_a_change_rolled_back_leaves_no_event(s):
    job = submit(s)
    assert shift(s, [JobState.QUEUED], JobState.CANCELLED, Job.id == job.id)
    s.rollback()
    assert events_of(s, job.id) == [] and repo.load_job(s, job.id).state == "QUEUED"


def test_cancelled_and_failed_jobs_send_completed_once_with_their_terminal_state(s):
    queued = submit(s)
    repo.request_cancel(s, "acme", queued.id)
    repo.request_cancel(s, "acme", queued.id)  # again: nothing changes, nothing is sent
    running = submit(s)
    attempt = claim(s, running.id)
    repo.request_cancel(s, "acme", running.id)  # CANCELLING: not an end yet
    attempts.mark_cancelled(s, attempt)
    failing = submit(s)
    attempts.fail_job(s, claim(s, failing.id), code="INTERNAL", message="boom")
    assert events_of(s, queued.id) == [("completed", "JOB_STATE_CANCELLED")]
    assert events_of(s, running.id) == [("started", "JOB_STATE_RUNNING"), ("completed", "JOB_STATE_CANCELLED")]
    assert events_of(s, failing.id) == [("started", "JOB_STATE_RUNNING"), ("completed", "JOB_STATE_FAILED")]


def test_a_requeue_sends_nothing_and_the_next_attempt_starts_again(s):
    job = submit(s)
    attempts.hand_back(s, claim(s, job.id))
    claim(s, job.id)
    assert events_of(s, job.id) == [("started", "JOB_STATE_RUNNING"), ("started", "JOB_STATE_RUNNING")]
    bodies = [json.loads(b) for b in s.scalars(select(WebhookDelivery.body)
                                                .where(WebhookDelivery.job_id == job.id))]
    assert sorted(body.get("attempts", 0) for body in bodies) == [1, 2]


def test_progress_keeps_one_unsent_row_with_the_newest_step(s):
    job = submit(s)
    attempt = claim(s, job.id)
    for step in range(1, 6):
        assert attempts.record_progress(s, attempt, "denoise", step, 8)
    progress = s.scalars(select(WebhookDelivery).where(WebhookDelivery.event == "progress")).all()
    s.commit()
    assert len(progress) == 1 and json.loads(progress[0].body)["progress"] == {"step": 5, "total": 8}
    # Once a dispatcher claimed it, the next progress needs a row of its own, held back by the throttle.
    assert [c.event for c in claim_due(s, "d1", POLICY, limit=10)] == ["started", "progress"]
    attempts.record_progress(s, attempt, "denoise", 6, 8)
    assert claim_due(s, "d2", POLICY, limit=10) == []  # within 0.5 s of the job's last progress try
    s.execute(update(WebhookDelivery).where(WebhookDelivery.claimed_by == "d1")
              .values(last_try_at=utcnow() - timedelta(seconds=PROGRESS_INTERVAL_S + 0.1)))
    s.commit()
    assert [json.loads(c.body)["progress"]["step"] for c in claim_due(s, "d2", POLICY, limit=10)] == [6]


def test_completed_drops_the_progress_not_yet_sent(s):
    job = submit(s)
    attempt = claim(s, job.id)
    attempts.record_progress(s, attempt, "denoise", 1, 8)
    attempts.finish_job(s, attempt, output_keys={})
    assert events_of(s, job.id) == [("started", "JOB_STATE_RUNNING"), ("completed", "JOB_STATE_SUCCEEDED")]


def test_a_fenced_attempt_writes_no_progress_event(s):
    job = submit(s)
    stale = claim(s, job.id)
    attempts.hand_back(s, stale)
    assert not attempts.record_progress(s, stale, "denoise", 1, 8)
    assert [e for e, _ in events_of(s, job.id)] == ["started"]
