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

from sqlalchemy import Row, and_, bindparam, case, exists, func, insert, null, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from shared.db.models import ApiKey, Job, JobQueueCount
from shared.db.types import utcnow
from shared.ids import validate_job_id
from shared.jobs import PRIORITY_MAX, PRIORITY_MIN, InvalidArgument, JobKind, JobState, parse_kind, parse_state
from shared.states import TERMINAL_STATES
from shared.transitions import shift
from shared.webhooks.subscription import WebhookSubscription

# How often a submit or a cancel tries again when the job changed between its statements (a race with another
# writer); past that the caller is told to retry.
RACE_TRIES = 3
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

# A job read to be shown: the jobs table's columns as attributes (a SQLAlchemy `Row`), tracked by no session.
# Cheaper to read than an ORM `Job`, and all that `shared.job_message.job_to_pb` needs.
JobRow = Row


class JobNotFound(LookupError):
    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class FailedPrecondition(Exception):
    """The job exists but is in a state that does not allow the operation."""


# ---------------------------------------------------------------- submit and read


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
    the same transaction (so a caller needs no second round trip to show it). An earlier job found on Postgres
    comes as the `JobRow` its read returned: the same attributes, read-only."""

    job: Job | JobRow
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

    On Postgres, one statement in autocommit (`_postgres_submit`): the admission check of migration 0008
    (the limits, under the advisory lock that serialises checked submits, held only while the server runs
    the statement), the insert, and what the new job goes behind, in one round trip. An idempotent replay
    costs a second read. On SQLite, one transaction of one read and one insert under `BEGIN IMMEDIATE`,
    which already serialises writers. Either way concurrent checked submits never overshoot a limit.
    """
    kind = parse_kind(kind)
    request_id = request_id or None
    job = _new_job(Job(
        id=job_id,  # None: `_new_job` gives it the column's default, a new uuid4
        tenant=tenant,
        request_id=request_id,
        request_fingerprint=fingerprint if request_id is not None else None,
        kind=kind.value,
        params=params,
        input_keys=input_keys,
        priority=priority,
        webhook_url=webhook.url if webhook is not None else None,
        webhook_events=list(webhook.events) if webhook is not None else None,
        trace_context=trace_context,
    ))
    if s.get_bind().dialect.name == "postgresql":
        return _postgres_submit(s, job, limits, fingerprint)
    # SQLite: the read and the insert share one transaction, and every SQLite transaction holds the write lock
    # from its BEGIN (shared.db.engine), so no other submit can come between them.
    try:
        existing_id, total, mine, ahead = _submit_read(s, job.tenant, job.request_id, job.priority)
        if existing_id is not None:
            existing = _same_request(s.get(Job, existing_id, populate_existing=True), fingerprint)
            return Submitted(existing, False, queue_position(s, existing))
        if limits is not None:
            _raise_if_full(limits, total=total, mine=mine)
        s.execute(insert(Job).values(_job_row(job)))
        s.commit()
    except BaseException:
        s.rollback()
        raise
    return Submitted(job, True, ahead + 1)


# The columns a submit writes (the ticket is the trigger's), and their Python-side defaults.
_SUBMIT_COLUMNS = [column for column in Job.__table__.columns if column.key != "queue_ticket"]


def _new_job(job: Job) -> Job:
    """`job` with every column default filled in, as a flush would: the caller's snapshot reads them all."""
    for column in _SUBMIT_COLUMNS:
        if getattr(job, column.key) is None and column.default is not None:
            default = column.default
            setattr(job, column.key, default.arg(None) if default.is_callable else default.arg)
    return job


def _job_row(job: Job) -> dict[str, Any]:
    return {column.key: getattr(job, column.key) for column in _SUBMIT_COLUMNS}


# Built once at import, so mutmut cannot switch its mutants on per test (tests/EQUIVALENT_MUTANTS.md).
def _postgres_admitted_insert():  # pragma: no mutate block
    """One statement, built once:
        WITH existing AS (the tenant's job with this request id),
             gate AS (the admission, only when there is no such job),
             inserted AS (INSERT … SELECT … FROM gate WHERE refused IS NULL
                          ON CONFLICT (tenant, request_id) DO NOTHING RETURNING queue_ticket)
        SELECT refused, ahead, the new ticket, the existing id
    A replay takes no lock (the gate's filter is decided once, before its function runs)."""
    existing = select(Job.id).where(Job.tenant == bindparam("new_tenant"),
                                    Job.request_id == bindparam("new_request_id")).cte("existing")
    admission = func.llada_queue_admission(bindparam("new_tenant"), bindparam("new_priority"),
                                           bindparam("per_tenant"), bindparam("total")).table_valued("refused", "ahead")
    gate = select(admission.c.refused, admission.c.ahead).where(~exists(select(existing.c.id))).cte("gate")
    values = select(*[bindparam(f"new_{column.key}", type_=column.type) for column in _SUBMIT_COLUMNS]) \
        .select_from(gate).where(gate.c.refused.is_(None))
    inserted = (postgresql.insert(Job.__table__).from_select([column.key for column in _SUBMIT_COLUMNS], values)
                .on_conflict_do_nothing(index_elements=["tenant", "request_id"])
                .returning(Job.__table__.c.queue_ticket).cte("inserted"))
    return select(select(gate.c.refused).scalar_subquery(), select(gate.c.ahead).scalar_subquery(),
                  select(inserted.c.queue_ticket).scalar_subquery(), select(existing.c.id).scalar_subquery())


_POSTGRES_ADMITTED_INSERT = _postgres_admitted_insert()


def _postgres_submit(s: Session, job: Job, limits: QueueLimits | None, fingerprint: str | None) -> Submitted:
    # Autocommit: the statement commits as it ends, releasing the lock without another round trip (inside a
    # transaction the caller left open, it commits with that one, below).
    connection = s.connection(execution_options={} if s.in_transaction() else {"isolation_level": "AUTOCOMMIT"})
    try:
        for _ in range(RACE_TRIES):
            refused, ahead, ticket, existing_id = connection.execute(_POSTGRES_ADMITTED_INSERT, {
                "per_tenant": limits.per_tenant if limits is not None else None,
                "total": limits.total if limits is not None else None,
                **{f"new_{key}": value for key, value in _job_row(job).items()}}).one()
            if ticket is not None:
                return Submitted(job, True, int(ahead) + 1)
            if existing_id is not None:  # answered even when the queue is full
                found = get_job_and_position(s, job.tenant, existing_id)
                if found is not None:
                    return Submitted(_same_request(found[0], fingerprint), False, found[1])
            elif refused is not None:
                raise QueueFull(refused, limits.per_tenant if refused == "tenant" else limits.total)
            # Either the insert lost the race to a concurrent submit of the same request id (ON CONFLICT did
            # nothing; that job committed since, so the next try finds it), or the job holding the request id
            # was deleted between the statement and the read: try again.
        raise FailedPrecondition(f"request_id {job.request_id!r} keeps changing; try again")
    finally:
        s.commit()


def precheck_submit(s: Session, *, tenant: str, request_id: str | None,
                    limits: QueueLimits | None = None, fingerprint: str | None = None) -> Submitted | None:
    """What `submit_job` would answer without inserting, for callers with costly work to do first
    (uploading input images): the tenant's existing job for `request_id` (`created` False), else
    None; raises `QueueFull` when the queue is already at a limit, `RequestIdReused` when the existing
    job's fingerprint differs. Advisory only — takes no lock; `submit_job` decides again atomically.
    One read, like `submit_job`'s."""
    try:
        existing_id, total, mine, _ = _submit_read(s, tenant, request_id or None, PRIORITY_MIN)
        if existing_id is not None:
            existing = _same_request(s.get(Job, existing_id, populate_existing=True), fingerprint)
            return Submitted(existing, False, queue_position(s, existing))
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


def _submit_read(s: Session, tenant: str, request_id: str | None, priority: int) -> tuple[str | None, int, int, int]:
    """One query for everything a submit decides on: the id of the tenant's job with the same request
    id (or None), the QUEUED jobs in total and of this tenant, and those that run before a new job of
    `priority` — every queued job of its priority or higher, as a new job takes the last ticket there. The counts
    are the trigger-kept `job_queue_counts` (migration 0008): a few rows, however long the queue."""
    if request_id is None:
        existing = null()
    else:
        existing = select(Job.id).where(Job.tenant == tenant, Job.request_id == request_id).scalar_subquery()
    row = s.execute(select(existing, _queued_sum(), _queued_sum(JobQueueCount.tenant == tenant),
                           _queued_sum(JobQueueCount.priority >= priority))).one()
    return row[0], int(row[1]), int(row[2]), int(row[3])


def _queued_sum(*where):
    return select(func.coalesce(func.sum(JobQueueCount.queued), 0)).where(*where).scalar_subquery()


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


def get_job_and_position(s: Session, tenant: str, job_id: str) -> tuple[JobRow, int] | None:
    """The tenant's job as a `JobRow` and its queue position (see `queue_positions`), in one statement; None
    as `get_job`."""
    row = s.connection().execute(_JOB_AND_POSITION, {"job_id": job_id, "tenant": tenant,
                                                     **_position_params()}).one_or_none()
    s.commit()
    return None if row is None else (row, _place_of(row))


def load_job(s: Session, job_id: str) -> Job:
    """Any tenant's job, fresh from the database (for workers and the reaper)."""
    job = s.get(Job, job_id, populate_existing=True)
    s.commit()
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(s: Session, tenant: str, **page) -> tuple[list[JobRow], str | None]:
    """The tenant's jobs, newest first, without their places in line; `page`: the keywords of
    `list_jobs_and_positions` (state, kind, page_size, page_token)."""
    placed, token = list_jobs_and_positions(s, tenant, **page)
    return [job for job, _ in placed], token


def list_jobs_and_positions(
    s: Session,
    tenant: str,
    *,
    state: JobState | str | None = None,
    kind: JobKind | str | None = None,
    page_size: int = 0,
    page_token: str | None = None,
) -> tuple[list[tuple[JobRow, int]], str | None]:
    """The tenant's jobs as `JobRow`s, newest first, each with its queue position, in one statement.
    `next_page_token` is None on the last page; `page_size` 0 = the default size."""
    if page_size < 0:
        raise InvalidArgument("page_size", "must not be negative")
    page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    query = select(_JOBS, *_POSITION_INPUTS).where(Job.tenant == tenant)
    if state is not None:
        query = query.where(Job.state == parse_state(state).value)
    if kind is not None:
        query = query.where(Job.kind == parse_kind(kind).value)
    if page_token:
        created_at, last_id = _decode_page_token(page_token)
        query = query.where(or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < last_id)))
    # One more row than the page: whether another page follows.
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1)
    rows = list(s.connection().execute(query, _position_params()))
    s.commit()
    token = _encode_page_token(rows[page_size - 1]) if len(rows) > page_size else None
    return [(row, _place_of(row)) for row in rows[:page_size]], token


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
        # The padding `_encode_page_token` strips: at most two, and the decoder ignores any beyond what it needs.
        decoded = json.loads(base64.urlsafe_b64decode(token + "=="))
        if not (isinstance(decoded, list) and len(decoded) == 2 and all(isinstance(v, str) for v in decoded)):
            raise ValueError
        created_at = datetime.fromisoformat(decoded[0])
        if created_at.tzinfo is None:
            raise ValueError
        # In UTC here, not only when bound, so a time that overflows there (year 9999 at -14:00) is refused here.
        return created_at.astimezone(timezone.utc), validate_job_id(decoded[1])  # a bad id is `refused` below
    except (ValueError, TypeError, OverflowError, RecursionError):  # InvalidArgument is a ValueError
        raise refused from None


# How many queued jobs ahead of a job at its own priority are counted one by one (an index range of at most
# this many + 1 entries); past that, the position is the upper bound `queue_positions` describes.
EXACT_POSITION_AHEAD = 100
# The most rows one reaper pass takes of each kind (re-sends, expiries); the next pass takes the rest.
PASS_BATCH = 1000
# queued_before's walk: one index range per priority, highest first.
_PRIORITIES_HIGH_FIRST = range(PRIORITY_MAX, PRIORITY_MIN - 1, -1)


# Built once at import, like _postgres_admitted_insert.
def _position_input_columns() -> list:  # pragma: no mutate block
    """Columns that, read beside a job (`select(Job, *_POSITION_INPUTS)`), give its place in line (`_place`);
    NULL for a job that is not queued. Each is a few counter rows or a bounded index range, whatever the
    length of the queue."""
    line = aliased(Job, name="line")
    queued = Job.state == JobState.QUEUED.value
    same = and_(line.state == JobState.QUEUED.value, line.priority == Job.priority)
    # In ticket order, so that the planner walks ix_jobs_queued_ticket and stops at the limit (unordered, it may
    # build a bitmap of every queued job of the priority first: 50 ms at a million).
    ahead = (select(line.queue_ticket).where(same, line.queue_ticket < Job.queue_ticket)
             .order_by(line.queue_ticket).limit(bindparam("count_up_to")).correlate(Job).subquery("ahead"))
    return [
        case((queued, _queued_sum(JobQueueCount.priority > Job.priority))).label("higher"),
        case((queued, _queued_sum(JobQueueCount.priority == Job.priority))).label("at_priority"),
        case((queued, select(func.count()).select_from(ahead).scalar_subquery())).label("counted"),
        case((queued, select(func.min(line.queue_ticket)).where(same).scalar_subquery())).label("first"),
    ]


_POSITION_INPUTS = _position_input_columns()
_JOBS = Job.__table__
_JOB_AND_POSITION = select(_JOBS, *_POSITION_INPUTS).where(_JOBS.c.id == bindparam("job_id"),
                                                            _JOBS.c.tenant == bindparam("tenant"))


def _position_params() -> dict[str, int]:
    return {"count_up_to": EXACT_POSITION_AHEAD + 1}


def _place_of(row) -> int:
    """The place in line of a row read with `_POSITION_INPUTS` beside the job's columns."""
    return _place(row.queue_ticket, row.higher, row.at_priority, row.counted, row.first)


def _place(ticket: int | None, higher: int | None, at_priority: int | None, counted: int | None,
           first: int | None) -> int:
    """A job's 1-based place in line from `_POSITION_INPUTS` (NULL, so 0, when it is not queued)."""
    if counted is None:
        return 0
    if counted <= EXACT_POSITION_AHEAD:
        return int(higher) + int(counted) + 1
    # More than EXACT_POSITION_AHEAD queued jobs of its priority have smaller tickets (read in the same snapshot
    # as the counts), so both bounds are past the exact head.
    return int(higher) + min(ticket - int(first), int(at_priority) - 1) + 1


def queue_position(s: Session, job: Job) -> int:
    """1-based place in line among all QUEUED jobs (all tenants); 0 when the job is not queued. See
    `queue_positions` for how exact it is."""
    return queue_positions(s, [job])[job.id]


def queue_positions(s: Session, jobs: Iterable[Job]) -> dict[str, int]:
    """Each job's 1-based place in line among all QUEUED jobs, as the database has it now; 0 for a job that is
    not queued (or no longer exists). Higher priorities first, then tickets (submit order) within a priority.
    One statement for them all, whatever the length of the queue:
    - queued jobs of higher priorities: exact, from `job_queue_counts`;
    - queued jobs of the same priority with a smaller ticket: counted exactly up to EXACT_POSITION_AHEAD;
      further back, `min(ticket - first ticket in line, queued at the priority - 1)`: an upper bound, exact
      unless jobs between the head and this one left out of turn (a cancel, a worker taking a later job
      first), and never below the true place.
    """
    ids = sorted({job.id for job in jobs})
    positions = dict.fromkeys(ids, 0)
    if ids:
        rows = s.execute(select(Job.id, Job.queue_ticket, *_POSITION_INPUTS).where(Job.id.in_(ids)),
                         _position_params())
        positions.update({job_id: _place(*row) for job_id, *row in rows})
    s.commit()
    return positions


def count_queued(s: Session, tenant: str | None = None) -> int:
    """QUEUED jobs, of a tenant or all: read from the trigger-kept counts, not counted row by row."""
    count = int(s.scalar(select(_queued_sum(*([JobQueueCount.tenant == tenant] if tenant is not None else [])))))
    s.commit()
    return count


def count_backlog(s: Session) -> int:
    """Queued plus running jobs: what the autoscaler sizes the workers by (ARCHITECTURE §5)."""
    count = int(s.scalar(select(func.coalesce(func.sum(JobQueueCount.queued + JobQueueCount.active), 0))))
    s.commit()
    return count


def queued_before(s: Session, cutoff: datetime, *, limit: int = PASS_BATCH) -> list[tuple[str, int]]:
    """(id, priority) of jobs QUEUED since before `cutoff`, highest priority first, then oldest: their broker
    message may be lost, re-send. One index range per priority (ix_jobs_state_priority_created): a single
    ORDER BY priority DESC, created_at cannot walk that index and would sort the whole queue."""
    rows: list[tuple[str, int]] = []
    for priority in _PRIORITIES_HIGH_FIRST:
        if len(rows) >= limit:
            break
        rows += s.execute(_QUEUED_BEFORE, {"priority": priority, "cutoff": cutoff, "limit": limit - len(rows)}).all()
    s.commit()
    return [(job_id, priority) for job_id, priority in rows]


_QUEUED_BEFORE = (select(Job.id, Job.priority)
                  .where(Job.state == JobState.QUEUED.value, Job.priority == bindparam("priority"),
                         Job.created_at < bindparam("cutoff"))
                  .order_by(Job.created_at).limit(bindparam("limit")))


# ---------------------------------------------------------------- state changes


def request_cancel(s: Session, tenant: str, job_id: str) -> Job:
    """QUEUED → CANCELLED at once; RUNNING → CANCELLING (the worker stops at its next check).

    Cancelling a job that is already cancelling or finished changes nothing and returns it.
    """
    for _ in range(RACE_TRIES):
        job = get_job(s, tenant, job_id)
        if job is None:
            raise JobNotFound(job_id)
        state = JobState(job.state)
        if state in TERMINAL_STATES or state is JobState.CANCELLING:
            return job
        if state is JobState.QUEUED:
            new, values = JobState.CANCELLED, {"cancel_requested": True, "finished_at": utcnow()}
        else:
            new, values = JobState.CANCELLING, {"cancel_requested": True}
        # Only from the state just read: a job claimed (or finished) in between is read again, not cancelled
        # as if it were still where it was.
        if shift(s, [state], new, Job.id == job_id, **values):
            s.commit()
            return load_job(s, job_id)
        s.rollback()
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


def finished_before(s: Session, older_than: datetime, *, limit: int = PASS_BATCH) -> list[tuple[str, str]]:
    """(id, state) of finished jobs whose `finished_at` is before `older_than`, oldest first: past retention.
    Read in order from the partial index ix_jobs_retention (finished, not yet expired jobs only)."""
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
                                             .execution_options(populate_existing=True))}
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
    return API_KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def register_api_key(s: Session, tenant: str, plaintext: str) -> None:
    """Store a given key (the embedded mode's `default_api_key`); a key already stored is kept."""
    if not API_KEY_MIN_CHARS <= len(plaintext) <= API_KEY_MAX_CHARS:
        raise InvalidArgument("api_key", f"must be {API_KEY_MIN_CHARS} to {API_KEY_MAX_CHARS} characters long")
    s.add(ApiKey(tenant=tenant, key_hash=_hash_key(plaintext), key_prefix=plaintext[:API_KEY_PREFIX_CHARS]))
    try:
        s.commit()
    except IntegrityError:  # stored before (the embedded key at each start), or by another process just now
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
