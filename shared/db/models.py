"""SQLAlchemy 2 models: `jobs` (the source of truth for every job), `api_keys`, `webhook_secrets` and
`webhook_deliveries` (the webhook outbox)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db.types import UTCDateTime, utcnow
from shared.jobs import JobKind, JobState, Stage
from shared.states import INITIAL_STATE


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def new_job_id() -> str:
    return str(uuid.uuid4())


_RETENTION_STATES = "state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # Idempotent submit: one job per (tenant, client request id). NULL request ids never collide.
        UniqueConstraint("tenant", "request_id", name="uq_jobs_tenant_request_id"),
        # ListJobs: a tenant's jobs newest first (keyset pagination on created_at, id).
        Index("ix_jobs_tenant_created", "tenant", "created_at", "id"),
        # The reaper's scans of queued and running jobs.
        Index("ix_jobs_state_priority_created", "state", "priority", "created_at"),
        # The reaper's retention pass: finished jobs not yet expired, oldest first (migration 0008).
        Index("ix_jobs_retention", "finished_at", postgresql_where=text(_RETENTION_STATES),
              sqlite_where=text(_RETENTION_STATES)),
        # Queue position: the queued jobs of a priority in ticket order (migration 0008).
        Index("ix_jobs_queued_ticket", "priority", "queue_ticket", postgresql_where=text("state = 'QUEUED'"),
              sqlite_where=text("state = 'QUEUED'")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_job_id)
    tenant: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    # What the submit asked for (kind, parameters, input images; migration 0003): a later submit with the
    # same request_id must ask for the same, else it is refused (shared.idempotency).
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    input_keys: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The JobState name; kept as a plain string so that adding a state needs no enum migration.
    state: Mapped[str] = mapped_column(String(16), default=INITIAL_STATE.value)
    stage: Mapped[str | None] = mapped_column(String(16))
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    # Every claim starts a new attempt: its number is the attempt's fencing token (shared.attempts).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Attempts a worker returned unfinished (draining on shutdown, or unable to load its model), migration
    # 0004: not counted against max_attempts.
    handed_back: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None]
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_field: Mapped[str | None] = mapped_column(String(128))
    output_keys: Mapped[dict[str, Any]] = mapped_column(default=dict)
    output_text: Mapped[str | None] = mapped_column(Text)
    # The seed an image job ran with, the request's or the one the model drew (migration 0002): the result
    # can then be reproduced by submitting it again with this seed.
    result_seed: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)

    # The submit's webhook (shared.webhooks.subscription, migration 0006): where, and the event names wanted.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    # The job's place in line at its priority, given on insert by a trigger (migration 0008): 1, 2, 3, …
    queue_ticket: Mapped[int | None] = mapped_column(BigInteger)
    # The W3C traceparent of the job's trace when tracing is on (shared.tracing): every attempt continues it.
    trace_context: Mapped[str | None] = mapped_column(String(64))

    @property
    def job_state(self) -> JobState:
        return JobState(self.state)

    @property
    def job_kind(self) -> JobKind:
        return JobKind(self.kind)

    @property
    def job_stage(self) -> Stage | None:
        return Stage(self.stage) if self.stage else None

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, tenant={self.tenant!r}, kind={self.kind}, state={self.state})"


class JobQueueCount(Base):
    """How many of a tenant's jobs at a priority are QUEUED and active (RUNNING, CANCELLING). Written only by
    the triggers of migration 0008, in the transaction that inserts, moves or deletes a job."""

    __tablename__ = "job_queue_counts"

    tenant: Mapped[str] = mapped_column(String(128), primary_key=True)
    priority: Mapped[int] = mapped_column(Integer, primary_key=True)
    queued: Mapped[int] = mapped_column(BigInteger, server_default="0")
    active: Mapped[int] = mapped_column(BigInteger, server_default="0")


class JobQueueTicket(Base):
    """The last ticket given at a priority (migration 0008's insert trigger)."""

    __tablename__ = "job_queue_tickets"

    priority: Mapped[int] = mapped_column(Integer, primary_key=True)
    issued: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    # SHA-256 hex of the key. Keys are 256-bit random tokens, so a fast hash is safe (no dictionary
    # to guess from) and lets a lookup go straight to the unique index.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the key, to tell keys apart in listings without revealing them.
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class WebhookSecret(Base):
    """A tenant's webhook signing secret (shared.webhooks). Kept in the clear: signing needs the key itself (an
    HMAC), unlike an API key, which is only compared. Every unretired secret signs: during a rotation the new
    and the old one both do, until the operator retires the old."""

    __tablename__ = "webhook_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One webhook event of a job and its delivery: the transactional outbox (shared.webhooks.outbox).

    Written in the transaction that changes the job, so an event exists exactly when its change committed.
    A dispatcher claims a due row for one try (`claimed_by`, `claimed_until`: a lease, so a dispatcher that
    dies mid-try loses the row to the next), sends it, and records the outcome only while its claim holds.
    No foreign key to `jobs`: a finished job may be deleted while its `completed` event is still on its way.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The dispatcher's scan: pending rows by due time.
        Index("ix_webhook_deliveries_state_next_try", "delivery_state", "next_try_at"),
        # GetJob's listing and the progress throttle: a job's deliveries in order.
        Index("ix_webhook_deliveries_job_created", "job_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the webhook-id header
    job_id: Mapped[str] = mapped_column(String(36))
    tenant: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)  # the Job as the proto's JSON, as it was at the event
    delivery_state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    tries: Mapped[int] = mapped_column(Integer, default=0)
    next_try_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    claimed_until: Mapped[datetime | None]
    last_try_at: Mapped[datetime | None]  # when the last try was claimed (the progress throttle reads it)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
