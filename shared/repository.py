"""Every read and write of jobs and API keys, as functions taking a SQLAlchemy `Session`.

Every function ends its transaction before returning — writes commit, reads end theirs too — so no
lock outlives a call (on SQLite every transaction holds the single write lock, see shared.db.engine).
Returned `Job`s stay readable because sessions from `session_factory` use `expire_on_commit=False`.
Use `with Session() as s:` (not `Session.begin()`), keep sessions short, and never hold one across an
await or a long computation.
State changes are conditional UPDATEs (`… WHERE state IN (legal sources)`), so they are atomic on
Postgres and SQLite alike: of two racing writers exactly one wins, and the loser sees the new state.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import String, and_, case, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.models import ApiKey, Job
from shared.db.models import new_job_id
from shared.db.types import utcnow
from shared.ids import validate_job_id
from shared.jobs import InvalidArgument, JobKind, JobState, parse_kind, parse_state
from shared.states import (ACTIVE_STATES, INITIAL_STATE, TERMINAL_STATES, IllegalTransition, check_transition,
                           sources_of)
from shared.transitions import shift
from shared.webhooks.subscription import WebhookSubscription

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Tokens this service makes are about 110 characters (a timestamp and a job id); anything much longer
# is not one of them and is refused before it is decoded.
MAX_PAGE_TOKEN_CHARS = 256
_PAGE_TOKEN_FORM = re.compile(r"[A-Za-z0-9_-]+")
API_KEY_PREFIX = "llada_"
# How many first characters of a key are stored in clear (ApiKey.key_prefix), to tell keys apart.
API_KEY_PREFIX_CHARS = 12
# The lengths a stored key may have: the gateway looks up no key outside them.
API_KEY_MIN_CHARS = 16
API_KEY_MAX_CHARS = 256
MAX_TENANT_CHARS = 128  # the width of the tenant columns

class JobNotFound(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class FailedPrecondition(Exception):
    """The job exists but is in a state that does not allow the operation."""


# ---------------------------------------------------------------- submit and read


# Any fixed 64-bit number: the Postgres advisory lock that serialises checked submits (see submit_job).
SUBMIT_LOCK_KEY = 0x11ADA_5B317


@dataclass(frozen=True)
class QueueLimits:
    """Backpressure bounds on QUEUED jobs, checked atomically with the insert by `submit_job`."""

    per_tenant: int
    total: int


class QueueFull(Exception):
    """A checked submit would exceed a queue limit; `scope` is "tenant" or "total"."""

    def __init__(self, scope: str, limit: int):
        what = "queued jobs for this tenant" if scope == "tenant" else "queued jobs in the service"
        super().__init__(f"too many {what} (limit {limit})")
        self.scope = scope
        self.limit = limit


class RequestIdReused(Exception):
    """A submit reused a `request_id` of the tenant's for a request that differs from the first one
    (another kind, other parameters or other input images; see shared.idempotency)."""

    def __init__(self, job_id: str):
        super().__init__(f"was already used for a different request (job {job_id}); a new request needs "
                         "a new request_id")
        self.job_id = job_id


def _same_request(existing: Job, fingerprint: str | None) -> Job:
    """`existing`, if the submit that found it asked for the same; else raises RequestIdReused. A job
    without a fingerprint (submitted before migration 0003) or a caller without one cannot compare."""
    if fingerprint is not None and existing.request_fingerprint is not None \
            and existing.request_fingerprint != fingerprint:
        raise RequestIdReused(existing.id)
    return existing


@dataclass(frozen=True)
class Submitted:
    """What a submit found or made: the job, whether this call created it, and its `queue_position` read in
    the same transaction (so a caller needs no second round trip to show it)."""

    job: Job
    created: bool
    queue_position: int


def submit_job(
    s: Session,
    *,
    tenant: str,
    request_id: str | None,
    kind: JobKind | str,
    params: dict[str, Any],
    input_keys: dict[str, str],
    priority: int = 0,
    job_id: str | None = None,
    limits: QueueLimits | None = None,
    fingerprint: str | None = None,
    webhook: WebhookSubscription | None = None,
    trace_context: str | None = None,
) -> Submitted:
    """Create a QUEUED job, or return the tenant's existing job with the same `request_id`.

    `fingerprint` (shared.idempotency.request_fingerprint) is stored with a request id; an existing job
    whose fingerprint differs raises `RequestIdReused` instead of being returned — also when the other
    submit wins a concurrent race.

    Returns `Submitted` (the job, whether it was created, its queue position). An empty
    `request_id` means "no idempotency". `job_id` lets the caller choose the id (e.g. to name input
    objects before the row exists); by default a uuid4. With `limits`, raises `QueueFull` instead of
    inserting past them; an idempotent retry of an existing job is answered even when the queue is full.

    One transaction of one read and one insert: the read (`_submit_read`) finds a job with the same
    request id, counts the queued jobs (total and the tenant's) and those ahead of the new one.
    With `limits` the check is atomic with the insert, so concurrent submits never overshoot: SQLite's
    `BEGIN IMMEDIATE` already serialises writers; on Postgres a transaction-scoped advisory lock
    serialises checked submits (held for those few statements, released by the commit).
    """
    kind = parse_kind(kind)
    request_id = request_id or None
    # The id (and, below, the creation time) are fixed before the row exists, so the job's place in
    # line can be counted in the same read as the backpressure counts.
    job = Job(
        id=job_id or new_job_id(),
        tenant=tenant,
        request_id=request_id,
        request_fingerprint=fingerprint if request_id is not None else None,
        kind=kind.value,
        params=params,
        input_keys=input_keys,
        priority=priority,
        state=INITIAL_STATE.value,
        webhook_url=webhook.url if webhook is not None else None,
        webhook_events=list(webhook.events) if webhook is not None else None,
        trace_context=trace_context,
    )
    try:
        if limits is not None and s.get_bind().dialect.name == "postgresql":
            s.execute(select(func.pg_advisory_xact_lock(SUBMIT_LOCK_KEY)))
        job.created_at = utcnow()  # after the lock: checked submits line up in the order they commit
        existing_id, total, mine, ahead = _submit_read(s, job)
        if existing_id is not None:
            existing = _same_request(s.get(Job, existing_id, populate_existing=True), fingerprint)
            position = _position_in_open_transaction(s, existing)
            s.commit()
            return Submitted(existing, False, position)
        if limits is not None:
            _raise_if_full(limits, total=total, mine=mine)
        s.add(job)
        s.commit()
    except IntegrityError:
        # A concurrent unchecked submit with the same request id won the unique constraint.
        s.rollback()
        existing = find_job_by_request_id(s, tenant, request_id) if request_id is not None else None
        if existing is None:
            raise
        return Submitted(_same_request(existing, fingerprint), False, queue_position(s, existing))
    except BaseException:
        s.rollback()
        raise
    return Submitted(job, True, ahead + 1)


def precheck_submit(s: Session, *, tenant: str, request_id: str | None,
                    limits: QueueLimits | None = None, fingerprint: str | None = None) -> Submitted | None:
    """What `submit_job` would answer without inserting, for callers with costly work to do first
    (uploading input images): the tenant's existing job for `request_id` (`created` False), else
    None; raises `QueueFull` when the queue is already at a limit, `RequestIdReused` when the existing
    job's fingerprint differs. Advisory only — takes no lock; `submit_job` decides again atomically.
    One read, like `submit_job`'s."""
    probe = Job(id="", tenant=tenant, request_id=request_id or None, priority=0, created_at=utcnow())
    try:
        existing_id, total, mine, _ = _submit_read(s, probe)
        if existing_id is not None:
            existing = _same_request(s.get(Job, existing_id, populate_existing=True), fingerprint)
            return Submitted(existing, False, _position_in_open_transaction(s, existing))
        if limits is not None:
            _raise_if_full(limits, total=total, mine=mine)
        return None
    finally:
        s.commit()


def _raise_if_full(limits: QueueLimits, *, total: int, mine: int) -> None:
    if mine >= limits.per_tenant:
        raise QueueFull("tenant", limits.per_tenant)
    if total >= limits.total:
        raise QueueFull("total", limits.total)


def _submit_read(s: Session, job: Job) -> tuple[str | None, int, int, int]:
    """One query for everything a submit decides on: the id of the tenant's job with the same request
    id (or None), the QUEUED jobs in total and of this tenant, and those that run before `job`."""
    if job.request_id is None:
        existing = literal(None, String)
    else:
        existing = (select(Job.id).where(Job.tenant == job.tenant, Job.request_id == job.request_id)
                    .scalar_subquery())
    # COUNT skips NULLs, so each CASE counts only the rows its condition picks.
    row = s.execute(
        select(existing, func.count(), func.count(case((Job.tenant == job.tenant, 1))),
               func.count(case((_ahead_of(job), 1))))
        .select_from(Job).where(Job.state == JobState.QUEUED.value)
    ).one()
    return row[0], int(row[1]), int(row[2]), int(row[3])


def find_job_by_request_id(s: Session, tenant: str, request_id: str) -> Job | None:
    """The tenant's job submitted with `request_id`, or None (also when only another tenant used it)."""
    job = s.scalars(
        select(Job).where(Job.tenant == tenant, Job.request_id == request_id)
        .execution_options(populate_existing=True)
    ).one_or_none()
    s.commit()
    return job


def get_job(s: Session, tenant: str, job_id: str) -> Job | None:
    """The tenant's job, or None (also when it belongs to another tenant)."""
    job = s.scalars(
        select(Job).where(Job.id == job_id, Job.tenant == tenant).execution_options(populate_existing=True)
    ).one_or_none()
    s.commit()
    return job


def load_job(s: Session, job_id: str) -> Job:
    """Any tenant's job, fresh from the database (for workers and the reaper)."""
    job = s.get(Job, job_id, populate_existing=True)
    s.commit()
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(
    s: Session,
    tenant: str,
    *,
    state: JobState | str | None = None,
    kind: JobKind | str | None = None,
    page_size: int = 0,
    page_token: str | None = None,
) -> tuple[list[Job], str | None]:
    """The tenant's jobs, newest first. `next_page_token` is None on the last page; 0 = default size."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query = select(Job).where(Job.tenant == tenant)
    if state is not None:
        query = query.where(Job.state == parse_state(state).value)
    if kind is not None:
        query = query.where(Job.kind == parse_kind(kind).value)
    if page_token:
        created_at, last_id = _decode_page_token(page_token)
        query = query.where(or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < last_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1)
    jobs = list(s.scalars(query))
    s.commit()
    if len(jobs) <= page_size:
        return jobs, None
    jobs = jobs[:page_size]
    return jobs, _encode_page_token(jobs[-1])


def _encode_page_token(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[datetime, str]:
    """The position a token of `_encode_page_token` names; anything else is `InvalidArgument("page_token")`.

    Parsed defensively, as any caller can send anything: bounded in length before decoding (no JSON
    nesting bomb or huge value gets that far), only the base64url alphabet (the decoder would otherwise
    skip other characters, a NUL among them), exactly `[aware ISO time, job id]`.
    """
    refused = InvalidArgument("page_token", "is not a token returned by ListJobs")
    if len(token) > MAX_PAGE_TOKEN_CHARS or not _PAGE_TOKEN_FORM.fullmatch(token):
        raise refused
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):
            raise ValueError
        created_at = datetime.fromisoformat(decoded[0])
        if created_at.tzinfo is None:
            raise ValueError
        return created_at.astimezone(timezone.utc), validate_job_id(decoded[1], "page_token")
    except (ValueError, TypeError, OverflowError, RecursionError):  # InvalidArgument is a ValueError
        raise refused from None


def _ahead_of(job: Job):
    """Queued jobs that run before `job`: higher priority first, then older, then smaller id."""
    return or_(
        Job.priority > job.priority,
        and_(Job.priority == job.priority, Job.created_at < job.created_at),
        and_(Job.priority == job.priority, Job.created_at == job.created_at, Job.id < job.id),
    )


def queue_position(s: Session, job: Job) -> int:
    """1-based place in line among all QUEUED jobs (all tenants); 0 when the job is not queued."""
    position = _position_in_open_transaction(s, job)
    s.commit()
    return position


def _position_in_open_transaction(s: Session, job: Job) -> int:
    if job.state != JobState.QUEUED.value:
        return 0
    ahead = s.scalar(select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED.value, _ahead_of(job)))
    return int(ahead or 0) + 1


def count_queued(s: Session, tenant: str | None = None) -> int:
    query = select(func.count()).select_from(Job).where(Job.state == JobState.QUEUED.value)
    if tenant is not None:
        query = query.where(Job.tenant == tenant)
    count = int(s.scalar(query) or 0)
    s.commit()
    return count


def count_backlog(s: Session) -> int:
    """Queued plus running jobs: what the autoscaler sizes the workers by (ARCHITECTURE §5)."""
    states = [JobState.QUEUED.value, *(st.value for st in ACTIVE_STATES)]
    count = int(s.scalar(select(func.count()).select_from(Job).where(Job.state.in_(states))) or 0)
    s.commit()
    return count


def queued_before(s: Session, cutoff: datetime, *, limit: int = 1000) -> list[tuple[str, int]]:
    """(id, priority) of jobs QUEUED since before `cutoff`: their broker message may be lost, re-send."""
    rows = s.execute(
        select(Job.id, Job.priority)
        .where(Job.state == JobState.QUEUED.value, Job.created_at < cutoff)
        .order_by(Job.priority.desc(), Job.created_at)
        .limit(limit)
    ).all()
    s.commit()
    return [(row.id, row.priority) for row in rows]


# ---------------------------------------------------------------- state changes


def _transition(
    s: Session,
    job_id: str,
    new: JobState,
    values: dict[str, Any],
    *,
    allowed_from: Iterable[JobState] | None = None,
    extra_where: Iterable = (),
) -> Job:
    """Atomically move `job_id` to `new` from one of `allowed_from` (default: every legal source).

    Raises JobNotFound, or IllegalTransition from the state the job is actually in.
    """
    if not shift(s, sources_of(new) if allowed_from is None else allowed_from, new, Job.id == job_id,
                 *extra_where, **values):
        s.rollback()
        job = load_job(s, job_id)
        check_transition(job.state, new)  # raises when the state itself forbids it
        raise IllegalTransition(JobState(job.state), new)  # legal in general, not for this caller
    s.commit()
    return load_job(s, job_id)


def request_cancel(s: Session, tenant: str, job_id: str) -> Job:
    """QUEUED → CANCELLED at once; RUNNING → CANCELLING (the worker stops at its next check).

    Cancelling a job that is already cancelling or finished changes nothing and returns it.
    """
    for _ in range(3):  # the job may change state under us (e.g. get claimed); re-read and retry
        job = get_job(s, tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        state = JobState(job.state)
        if state in TERMINAL_STATES or state is JobState.CANCELLING:
            return job
        now = utcnow()
        if state is JobState.QUEUED:
            new, values = JobState.CANCELLED, {"cancel_requested": True, "finished_at": now}
        else:
            new, values = JobState.CANCELLING, {"cancel_requested": True}
        try:
            return _transition(s, job_id, new, values, allowed_from=[state])
        except IllegalTransition:
            continue
    raise FailedPrecondition(f"job {job_id} keeps changing state; try again")


def delete_job(s: Session, tenant: str, job_id: str) -> Job:
    """Remove a finished job's row and return it (the caller deletes its objects).

    Jobs still queued or running are refused: cancel them first, so no worker writes for a deleted job.
    """
    job = get_job(s, tenant, job_id)
    if job is None:
        raise JobNotFound(job_id)
    if JobState(job.state) not in TERMINAL_STATES:
        raise FailedPrecondition(f"job {job_id} is {job.state}; cancel it before deleting")
    s.delete(job)
    s.commit()
    return job


def finished_before(s: Session, older_than: datetime, *, limit: int = 1000) -> list[tuple[str, str]]:
    """(id, state) of finished jobs whose `finished_at` is before `older_than`, oldest first: past retention."""
    finished = [st.value for st in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)]
    rows = s.execute(
        select(Job.id, Job.state).where(Job.state.in_(finished), Job.finished_at < older_than)
        .order_by(Job.finished_at).limit(limit)
    ).all()
    s.commit()
    return [(row.id, row.state) for row in rows]


def mark_expired(s: Session, job_id: str, state: JobState | str) -> bool:
    """`state` → EXPIRED, once the job's objects are deleted: the row keeps its metadata but no outputs.
    False when the job moved on meanwhile (deleted)."""
    expired = shift(s, [state], JobState.EXPIRED, Job.id == job_id, output_keys={}, output_text=None)
    s.commit()
    return bool(expired)


def jobs_by_id(s: Session, job_ids: Iterable[str]) -> dict[str, Job]:
    """Any tenant's jobs among `job_ids` (those that exist), fresh from the database."""
    ids = sorted(set(job_ids))
    jobs = {job.id: job for job in s.scalars(select(Job).where(Job.id.in_(ids))
                                             .execution_options(populate_existing=True))} if ids else {}
    s.commit()
    return jobs


# ---------------------------------------------------------------- API keys


def _hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_api_key(s: Session, tenant: str) -> str:
    """A new random API key for `tenant`. Only its hash is stored: show the plaintext once."""
    check_tenant(tenant)
    plaintext = new_api_key()
    register_api_key(s, tenant, plaintext)
    return plaintext


def check_tenant(tenant: str) -> str:
    """A tenant name an operator may give: not empty, printable, and fitting the tenant columns."""
    if not tenant or not tenant.strip():
        raise InvalidArgument("tenant", "must not be empty")
    if len(tenant) > MAX_TENANT_CHARS or not tenant.isprintable():
        raise InvalidArgument("tenant", f"must be at most {MAX_TENANT_CHARS} printable characters")
    return tenant


def new_api_key() -> str:
    """A fresh random API key (its first API_KEY_PREFIX_CHARS characters are what `list-keys` shows)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def register_api_key(s: Session, tenant: str, plaintext: str) -> None:
    """Store a given key (the embedded mode's `default_api_key`); a key already stored is kept."""
    if not API_KEY_MIN_CHARS <= len(plaintext) <= API_KEY_MAX_CHARS:
        raise InvalidArgument("api_key", f"must be {API_KEY_MIN_CHARS} to {API_KEY_MAX_CHARS} characters long")
    key_hash = _hash_key(plaintext)
    if s.scalar(select(ApiKey.id).where(ApiKey.key_hash == key_hash)) is not None:
        s.commit()
        return
    s.add(ApiKey(tenant=tenant, key_hash=key_hash, key_prefix=plaintext[:API_KEY_PREFIX_CHARS]))
    try:
        s.commit()
    except IntegrityError:  # registered concurrently by another process
        s.rollback()


def tenant_for_api_key(s: Session, plaintext: str) -> str | None:
    """The tenant owning this key, or None for an unknown or revoked key."""
    if not plaintext:
        return None
    tenant = s.scalar(select(ApiKey.tenant).where(ApiKey.key_hash == _hash_key(plaintext), ApiKey.revoked_at.is_(None)))
    s.commit()
    return tenant


def list_api_keys(s: Session, tenant: str | None = None) -> list[ApiKey]:
    """Every key (revoked ones too), oldest first: id, tenant, prefix and times — never the key."""
    query = select(ApiKey).order_by(ApiKey.id)
    if tenant is not None:
        query = query.where(ApiKey.tenant == tenant)
    keys = list(s.scalars(query))
    s.commit()
    return keys


def revoke_api_key(s: Session, ref: str) -> ApiKey | None:
    """Revoke the one active key whose id is `ref` or whose prefix (as `list_api_keys` shows it) starts
    with `ref`; returns it, or None when no active key matches. Never takes the key itself: on a command
    line it would be visible to every user of the machine (`ps`). A `ref` that matches several active
    keys is refused (`InvalidArgument("key")`) rather than guessed."""
    ref = ref.strip()
    if not ref:
        raise InvalidArgument("key", "give the key's id or its prefix (as list-keys shows them)")
    if len(ref) > API_KEY_PREFIX_CHARS:
        raise InvalidArgument("key", f"is longer than a key prefix ({API_KEY_PREFIX_CHARS} characters): give "
                              "the key's id or its prefix as list-keys shows them, never the key itself")
    # An exact comparison of the first characters: LIKE would ignore case on SQLite.
    matches = [func.substr(ApiKey.key_prefix, 1, len(ref)) == ref]
    if ref.isascii() and ref.isdigit() and int(ref) < 2**31:
        matches.append(ApiKey.id == int(ref))
    try:
        keys = list(s.scalars(select(ApiKey).where(or_(*matches), ApiKey.revoked_at.is_(None))))
        if len(keys) > 1:
            ids = ", ".join(str(key.id) for key in keys)
            raise InvalidArgument("key", f"{ref!r} matches {len(keys)} active keys (ids {ids}); give the id")
        if not keys:
            return None
        s.execute(update(ApiKey).where(ApiKey.id == keys[0].id, ApiKey.revoked_at.is_(None))
                  .values(revoked_at=utcnow()))
        s.commit()
        return keys[0]
    finally:
        s.rollback()  # ends the read when nothing was written (a no-op after the commit)
