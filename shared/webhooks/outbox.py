"""The webhook outbox, written in the transaction of the change it reports (issue 14).

`shared.transitions.shift` calls `record_state_events` for every job it moved and `shared.attempts` calls
`record_progress_event` for every progress it stored, before their commit: the event row exists exactly when
the change committed, whatever process dies after. A dispatcher (services.webhooks) delivers the rows.

- `started`: a job entered RUNNING (each attempt's claim);
- `completed`: it ended SUCCEEDED, FAILED or CANCELLED (an EXPIRED job's results are gone: no event);
- `progress`: its stage or step moved. Throttled: one progress row waits unsent at a time and takes the newest
  snapshot ("the newest wins"); a dispatcher claims a job's progress row only `PROGRESS_INTERVAL_S` after its
  last progress try (shared.webhooks.deliveries), so a receiver gets at most one per job per interval. A
  `completed` row drops the progress rows still unsent: they are stale once the job has ended.

The body is the job as the proto's JSON at the event (without presigned URLs: the dispatcher signs fresh ones
for each try). Every row's id is the `webhook-id` of all its tries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from shared.db.clock import db_now
from shared.db.models import Job, WebhookDelivery
from shared.job_message import job_json, job_to_pb
from shared.jobs import JobState

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STARTED, PROGRESS, COMPLETED = "started", "progress", "completed"
EVENT_OF_STATE = {JobState.RUNNING: STARTED, JobState.SUCCEEDED: COMPLETED, JobState.FAILED: COMPLETED,
                  JobState.CANCELLED: COMPLETED}
PROGRESS_INTERVAL_S = 0.5
# PostgreSQL: a row's transaction notifies this channel, delivered at its commit (services.webhooks.wakeup).
NOTIFY_CHANNEL = "llada_webhooks"


def new_delivery_id() -> str:
    return "msg_" + uuid.uuid4().hex


def record_state_events(s: Session, moved: Iterable, new: JobState) -> None:
    """For each moved row (id, kind, webhook_url, webhook_events) whose webhook wants the event of `new`."""
    event = EVENT_OF_STATE.get(new)
    if event is None:
        return
    for row in moved:
        if not row.webhook_url:
            continue
        if event == COMPLETED:
            _drop_unsent_progress(s, row.id)
        if event in (row.webhook_events or ()):
            _insert(s, _snapshot(s, row.id), event)


def record_progress_event(s: Session, job_id: str) -> None:
    """After a progress write of a job whose webhook wants `progress` (see the module's throttle)."""
    job = _snapshot(s, job_id)
    # An unsent, unclaimed progress row takes the newest snapshot (conditional: a dispatcher may claim it
    # this moment, and then this progress needs a row of its own).
    replaced = s.execute(update(WebhookDelivery)
                         .where(WebhookDelivery.job_id == job_id, WebhookDelivery.event == PROGRESS, _unsent())
                         .values(body=_body(job)).execution_options(synchronize_session=False))
    if replaced.rowcount == 0:
        _insert(s, job, PROGRESS)


def _snapshot(s: Session, job_id: str) -> Job:
    return s.get(Job, job_id, populate_existing=True)  # this transaction's view: the change just made


def _body(job: Job) -> str:
    return job_json(job_to_pb(job))


def _insert(s: Session, job: Job, event: str) -> None:
    s.execute(insert(WebhookDelivery).values(
        id=new_delivery_id(), job_id=job.id, tenant=job.tenant, event=event, url=job.webhook_url,
        body=_body(job), delivery_state=PENDING, tries=0, next_try_at=db_now(), created_at=db_now()))
    if s.get_bind().dialect.name == "postgresql":
        s.execute(select(func.pg_notify(NOTIFY_CHANNEL, "")))  # several in one transaction arrive as one


def _unsent():
    return ((WebhookDelivery.delivery_state == PENDING) & (WebhookDelivery.tries == 0)
            & WebhookDelivery.claimed_by.is_(None))


def _drop_unsent_progress(s: Session, job_id: str) -> None:
    s.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id == job_id, WebhookDelivery.event == PROGRESS,
                                            _unsent()).execution_options(synchronize_session=False))
