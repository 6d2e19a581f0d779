"""A dispatcher's side of the webhook outbox: claim due deliveries, record each try's outcome, list a job's.

A claim is a lease on one try: `claimed_by`, `claimed_until` and `tries + 1`, in one conditional UPDATE (on
Postgres its scan skips rows another dispatcher is claiming: `FOR UPDATE SKIP LOCKED`), so several
dispatchers never send the same try. The outcome is written only while the claim holds (`claimed_by` and
`tries` unchanged): a dispatcher that stalled past its lease, whose row another one claimed since, records
nothing. A dispatcher that dies mid-try leaves the row claimed until the lease ends; the next claim retries
it with the same id. Times are the database's (`db_now`), as for job leases.

Functions take a `Session` and end their transaction before returning, like shared.repository's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from shared.db.clock import db_now
from shared.db.models import WebhookDelivery
from shared.webhooks.outbox import DELIVERED, FAILED, PENDING, PROGRESS, PROGRESS_INTERVAL_S

GETJOB_LIMIT = 100  # deliveries GetJob shows: the newest


@dataclass(frozen=True)
class Policy:
    """How hard delivery tries: each try's lease, the tries and the age after which it gives up, and the
    backoff between tries (exponential from `backoff_s`, capped at `backoff_cap_s`, with jitter)."""

    lease_s: float
    max_tries: int
    max_age_s: float
    backoff_s: float
    backoff_cap_s: float

    def delay_after(self, tries: int, rng: random.Random) -> float:
        """Seconds before the next try, after `tries` failed ones: half fixed, half random ("equal jitter"),
        so receivers coming back after an outage are not hit by every retry at once."""
        ceiling = min(self.backoff_cap_s, self.backoff_s * 2 ** (tries - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class Claim:
    """One try of one delivery, owned by `dispatcher` while its lease lasts."""

    id: str
    job_id: str
    tenant: str
    event: str
    url: str
    body: str
    tries: int  # counting this one
    created_at: datetime
    dispatcher: str


@dataclass(frozen=True)
class Outcome:
    """What one try came to: the receiver's status (0: none), why it did not deliver, and whether trying
    again could help (`final`: a refused address, a redirect)."""

    status_code: int = 0
    error: str = ""
    final: bool = False

    @property
    def delivered(self) -> bool:
        return not self.error and 200 <= self.status_code < 300


def _due():
    """Pending, its time come, not claimed by a live lease, and — a progress event — not within
    PROGRESS_INTERVAL_S of the job's last progress try (the throttle of shared.webhooks.outbox)."""
    earlier = aliased(WebhookDelivery)
    recent_progress = exists().where(earlier.job_id == WebhookDelivery.job_id, earlier.event == PROGRESS,
                                     earlier.id != WebhookDelivery.id,
                                     earlier.last_try_at > db_now(PROGRESS_INTERVAL_S))
    return and_(WebhookDelivery.delivery_state == PENDING, WebhookDelivery.next_try_at <= db_now(),
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until < db_now()),
                or_(WebhookDelivery.event != PROGRESS, ~recent_progress))


# The columns of a claimed row, in Claim's order (plain columns: ORM objects could come from a stale identity map).
_CLAIMED = (WebhookDelivery.id, WebhookDelivery.job_id, WebhookDelivery.tenant, WebhookDelivery.event,
            WebhookDelivery.url, WebhookDelivery.body, WebhookDelivery.tries, WebhookDelivery.created_at)


def claim_due(s: Session, dispatcher: str, policy: Policy, *, limit: int) -> list[Claim]:
    """Up to `limit` due deliveries, each claimed for one try, in one statement (`UPDATE … WHERE id IN (the
    due rows, locked, skipping those another dispatcher is claiming) RETURNING …`). Rows past their tries or
    age are left to `give_up_exhausted`."""
    due = and_(_due(), WebhookDelivery.tries < policy.max_tries,
               WebhookDelivery.created_at >= db_now(policy.max_age_s))
    scan = select(WebhookDelivery.id).where(due).order_by(WebhookDelivery.next_try_at).limit(limit)
    if s.get_bind().dialect.name == "postgresql":
        scan = scan.with_for_update(skip_locked=True)
    # `due` again in the UPDATE: on SQLite (no row locks) it is what makes a concurrent claim a no-op.
    rows = s.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(scan.scalar_subquery()), due)
                     .values(claimed_by=dispatcher, claimed_until=db_now(-policy.lease_s), last_try_at=db_now(),
                             tries=WebhookDelivery.tries + 1)
                     .returning(*_CLAIMED).execution_options(synchronize_session=False)).all()
    s.commit()
    return sorted((Claim(*row, dispatcher=dispatcher) for row in rows), key=lambda claim: claim.created_at)


def give_up_exhausted(s: Session, policy: Policy) -> int:
    """Fail the due rows past their tries or age (a try whose dispatcher died counts), saying why."""
    exhausted = and_(_due(), or_(WebhookDelivery.tries >= policy.max_tries,
                                 WebhookDelivery.created_at < db_now(policy.max_age_s)))
    result = s.execute(update(WebhookDelivery).where(exhausted)
                       .values(delivery_state=FAILED, finished_at=db_now(), claimed_by=None, claimed_until=None,
                               error=_gave_up(policy, WebhookDelivery.error))
                       .execution_options(synchronize_session=False))
    s.commit()
    return result.rowcount


def _gave_up(policy: Policy, last_error):
    """The row's last error, and why it was given up (SQL: the rows are updated in one statement)."""
    return (func.coalesce(last_error, "its dispatcher stopped before an answer")
            + f" (given up: {policy.max_tries} tries or {policy.max_age_s:g} s)")


def record_outcome(s: Session, claim: Claim, outcome: Outcome, policy: Policy, rng: random.Random) -> bool:
    """Record the try's outcome: delivered, pending again after a backoff, or failed (final, out of tries, or
    the next try would come past the age limit). False: the claim was lost (nothing recorded)."""
    now = s.scalar(select(db_now()))
    common = {"claimed_by": None, "claimed_until": None, "status_code": outcome.status_code or None}
    if outcome.delivered:
        values = {**common, "delivery_state": DELIVERED, "error": None, "finished_at": now}
    else:
        delay = policy.delay_after(claim.tries, rng)
        too_old = now + timedelta(seconds=delay) > claim.created_at + timedelta(seconds=policy.max_age_s)
        if outcome.final:
            values = {**common, "delivery_state": FAILED, "error": outcome.error, "finished_at": now}
        elif claim.tries >= policy.max_tries or too_old:
            why = f"{claim.tries} tries" if claim.tries >= policy.max_tries else f"{policy.max_age_s:g} s"
            values = {**common, "delivery_state": FAILED, "finished_at": now,
                      "error": f"{outcome.error} (given up after {why})"}
        else:
            values = {**common, "error": outcome.error, "next_try_at": now + timedelta(seconds=delay)}
    result = s.execute(update(WebhookDelivery)
                       .where(WebhookDelivery.id == claim.id, WebhookDelivery.claimed_by == claim.dispatcher,
                              WebhookDelivery.tries == claim.tries, WebhookDelivery.delivery_state == PENDING)
                       .values(**values).execution_options(synchronize_session=False))
    s.commit()
    return result.rowcount == 1


def deliveries_of(s: Session, job_id: str, *, limit: int = GETJOB_LIMIT) -> list[WebhookDelivery]:
    """The job's newest `limit` deliveries, oldest first."""
    rows = s.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                     .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.next_try_at.desc())
                     .limit(limit)).all()
    s.commit()
    return list(reversed(rows))


def purge_settled(s: Session, older_than: datetime, *, limit: int = 1000) -> int:
    """Delete up to `limit` delivered or failed deliveries that settled before `older_than` (the reaper's
    retention); returns how many. Pending ones stay: they are still owed."""
    old = select(WebhookDelivery.id).where(WebhookDelivery.delivery_state.in_([DELIVERED, FAILED]),
                                           WebhookDelivery.finished_at < older_than).limit(limit)
    result = s.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(old.scalar_subquery()))
                       .execution_options(synchronize_session=False))
    s.commit()
    return result.rowcount
