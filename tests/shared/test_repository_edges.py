"""The repository at its edges, on SQLite and Postgres: the texts its refusals show users, reads that must come
from the database and not from a session's memory, paging at the page size and on equal times, a cancel racing a
claim, and the limits of retention, API keys and page tokens at the limit and one past it."""

from __future__ import annotations

import base64
import json
import warnings
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from shared import attempts
from shared import repository as repo
from shared.db import ApiKey, Job
from shared.db.types import utcnow

A_MISSING_ID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"


def submit(s, tenant="acme", request_id=None, *, kind="TEXT_TO_IMAGE", fingerprint=None, limits=None, **more):
    return repo.submit_job(s, tenant=tenant, request_id=request_id, kind=kind, params={"prompt": "p"},
                           input_keys={}, fingerprint=fingerprint, limits=limits, **more)


def refusal(call) -> str:
    with pytest.raises(Exception) as info:
        call()
    return f"{type(info.value).__name__}: {info.value}"


# ---------------------------------------------------------------- what a refusal says


def test_a_full_queue_names_which_limit_and_its_size(s):
    submit(s, "acme")
    assert refusal(lambda: submit(s, "acme", limits=repo.QueueLimits(per_tenant=1, total=5))) == \
        "QueueFull: too many queued jobs for this tenant (limit 1)"
    assert refusal(lambda: submit(s, "globex", limits=repo.QueueLimits(per_tenant=5, total=1))) == \
        "QueueFull: too many queued jobs in the service (limit 1)"
    assert refusal(lambda: repo.precheck_submit(s, tenant="globex", request_id=None,
                                                limits=repo.QueueLimits(per_tenant=5, total=1))) == \
        "QueueFull: too many queued jobs in the service (limit 1)"


def test_a_reused_request_id_names_the_job_that_holds_it(s):
    first = submit(s, request_id="r1", fingerprint="f1").job
    with pytest.raises(repo.RequestIdReused) as info:
        submit(s, request_id="r1", fingerprint="f2")
    assert str(info.value) == (f"was already used for a different request (job {first.id}); a new request needs "
                               "a new request_id")
    assert info.value.job_id == first.id


def test_a_missing_or_unfinished_job_is_refused_by_name(s):
    for call in (lambda: repo.load_job(s, A_MISSING_ID), lambda: repo.request_cancel(s, "acme", A_MISSING_ID),
                 lambda: repo.delete_job(s, "acme", A_MISSING_ID)):
        with pytest.raises(repo.JobNotFound) as info:
            call()
        assert (str(info.value), info.value.job_id) == (f"job {A_MISSING_ID} not found", A_MISSING_ID)
    job = submit(s).job
    assert refusal(lambda: repo.delete_job(s, "acme", job.id)) == \
        f"FailedPrecondition: job {job.id} is QUEUED; cancel it before deleting"


def test_operator_input_is_refused_naming_the_field(s):
    assert refusal(lambda: repo.check_tenant(" ")) == "InvalidArgument: tenant: must not be empty"
    assert repo.check_tenant("t" * repo.MAX_TENANT_CHARS) == "t" * repo.MAX_TENANT_CHARS
    assert refusal(lambda: repo.check_tenant("t" * (repo.MAX_TENANT_CHARS + 1))) == \
        f"InvalidArgument: tenant: must be at most {repo.MAX_TENANT_CHARS} printable characters"
    assert refusal(lambda: repo.list_jobs(s, "acme", page_size=-1)) == \
        "InvalidArgument: page_size: must not be negative"
    assert refusal(lambda: repo.list_jobs(s, "acme", page_token="x")) == \
        "InvalidArgument: page_token: is not a token returned by ListJobs"
    assert refusal(lambda: repo.revoke_api_key(s, " ")) == \
        "InvalidArgument: key: give the key's id or its prefix (as list-keys shows them)"
    assert refusal(lambda: repo.revoke_api_key(s, "k" * (repo.API_KEY_PREFIX_CHARS + 1))) == (
        f"InvalidArgument: key: is longer than a key prefix ({repo.API_KEY_PREFIX_CHARS} characters): give the "
        "key's id or its prefix as list-keys shows them, never the key itself")


def test_an_ambiguous_key_prefix_lists_the_ids_to_choose_from(s):
    repo.create_api_key(s, "acme")
    repo.create_api_key(s, "acme")
    ids = [key.id for key in repo.list_api_keys(s)]
    assert refusal(lambda: repo.revoke_api_key(s, "llada_")) == \
        f"InvalidArgument: key: 'llada_' matches 2 active keys (ids {ids[0]}, {ids[1]}); give the id"


def test_a_key_is_registered_from_its_shortest_to_its_longest_length(s):
    for length in (repo.API_KEY_MIN_CHARS, repo.API_KEY_MAX_CHARS):
        key = "k" * length
        repo.register_api_key(s, "acme", key)
        assert repo.tenant_for_api_key(s, key) == "acme"
    for length in (repo.API_KEY_MIN_CHARS - 1, repo.API_KEY_MAX_CHARS + 1):
        assert refusal(lambda: repo.register_api_key(s, "acme", "k" * length)) == (
            f"InvalidArgument: api_key: must be {repo.API_KEY_MIN_CHARS} to {repo.API_KEY_MAX_CHARS} characters long")


def test_each_registered_key_is_its_own_and_a_new_key_is_32_random_bytes(s):
    repo.register_api_key(s, "acme", "acme-key-0123456789")
    repo.register_api_key(s, "globex", "globex-key-0123456789")
    assert [repo.tenant_for_api_key(s, k) for k in ("acme-key-0123456789", "globex-key-0123456789")] == \
        ["acme", "globex"]
    key = repo.new_api_key()
    assert key.startswith(repo.API_KEY_PREFIX)
    assert len(base64.urlsafe_b64decode(key[len(repo.API_KEY_PREFIX):] + "==")) == 32


def test_keys_are_listed_in_id_order_after_a_revoke(s):
    for _ in range(3):
        repo.create_api_key(s, "acme")
    ids = [key.id for key in repo.list_api_keys(s)]
    repo.revoke_api_key(s, str(ids[0]))  # on Postgres the revoked row's new version goes last in the table
    assert [key.id for key in repo.list_api_keys(s)] == ids == sorted(ids)


def test_a_key_with_the_largest_id_is_revoked_by_its_id(s):
    s.add(ApiKey(id=2**31 - 1, tenant="acme", key_hash="h" * 64, key_prefix="llada_aaaaaa"))
    s.commit()
    assert repo.revoke_api_key(s, str(2**31 - 1)).id == 2**31 - 1
    assert repo.revoke_api_key(s, str(2**31)) is None  # past the column's range: no match, no error


def test_an_empty_backlog_is_zero(s):
    assert repo.count_backlog(s) == 0
    submit(s)
    running = submit(s).job
    attempts.claim_job(s, running.id, "w1", heartbeat_timeout_s=60)
    assert repo.count_backlog(s) == 2


def test_a_request_id_whose_job_keeps_vanishing_is_refused_after_the_tries(s, db_url, monkeypatch):
    """Postgres: the statement found the tenant's job for the request id, but it was deleted before it could be
    read, each time."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite reads and inserts in one locked transaction: nothing comes between")
    submit(s, request_id="r1")
    reads = []
    monkeypatch.setattr(repo, "get_job_and_position", lambda *args: reads.append(args) and None)
    assert refusal(lambda: submit(s, request_id="r1")) == \
        "FailedPrecondition: request_id 'r1' keeps changing; try again"
    assert len(reads) == repo.RACE_TRIES


def test_a_postgres_submit_commits_with_its_statement_or_with_the_callers_transaction(Session, engine, db_url):
    """Alone, the submit's one statement runs in autocommit, so the admission lock is released as the statement
    ends; inside a transaction the caller left open, it joins that one (and commits it)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no autocommit statement: its submit is one BEGIN IMMEDIATE transaction")
    autocommit = []

    @event.listens_for(engine, "before_cursor_execute")
    def note(conn, cursor, statement, *args):
        if statement.lstrip().startswith("WITH"):
            autocommit.append(conn.connection.dbapi_connection.autocommit)

    with Session() as s:
        alone = submit(s, limits=repo.QueueLimits(per_tenant=5, total=5)).job
        s.execute(select(1))  # the caller's own transaction, still open
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. SQLAlchemy's "options ignored on a connection in use"
            joined = submit(s, limits=repo.QueueLimits(per_tenant=5, total=5)).job
        assert not s.in_transaction()
    with Session() as other:
        assert {job.id for job in repo.list_jobs(other, "acme")[0]} == {alone.id, joined.id}
    assert autocommit == [True, False]


# ---------------------------------------------------------------- fresh reads


def test_reads_show_the_database_not_what_the_session_read_before(Session):
    """Sessions keep what they read (expire_on_commit=False): each read must refresh it from the row."""
    with Session() as reader, Session() as writer:
        job = submit(reader, request_id="r1", fingerprint="f").job
        held = repo.load_job(reader, job.id)  # in the reader's identity map for as long as it is held
        reads = {
            "get_job": lambda: repo.get_job(reader, "acme", job.id),
            "find_job_by_request_id": lambda: repo.find_job_by_request_id(reader, "acme", "r1"),
            "load_job": lambda: repo.load_job(reader, job.id),
            "jobs_by_id": lambda: repo.jobs_by_id(reader, [job.id])[job.id],
            "precheck_submit": lambda: repo.precheck_submit(reader, tenant="acme", request_id="r1",
                                                            fingerprint="f").job,
            "submit_job's replay": lambda: submit(reader, request_id="r1", fingerprint="f").job,
        }
        for step, (name, read) in enumerate(reads.items(), start=1):
            writer.execute(update(Job).where(Job.id == job.id).values(progress_step=step))
            writer.commit()
            assert read().progress_step == step, name
        precheck = repo.precheck_submit(reader, tenant="acme", request_id="r1", fingerprint="f")
        replay = submit(reader, request_id="r1", fingerprint="f")
        assert (precheck.created, precheck.queue_position) == (replay.created, replay.queue_position) == (False, 1)
        assert held.id == job.id


def test_jobs_by_id_finds_any_tenants_jobs_among_those_asked(s):
    mine, theirs = submit(s, "acme").job, submit(s, "globex").job
    found = repo.jobs_by_id(s, [mine.id, theirs.id, mine.id, A_MISSING_ID])
    assert {job_id: job.tenant for job_id, job in found.items()} == {mine.id: "acme", theirs.id: "globex"}
    assert repo.jobs_by_id(s, []) == {}


def test_a_submit_keeps_what_it_was_given(s):
    made = submit(s, job_id=A_MISSING_ID, trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                  priority=4)
    stored = repo.load_job(s, A_MISSING_ID)
    assert made.job.id == stored.id == A_MISSING_ID
    assert (stored.state, stored.priority, stored.trace_context[:35]) == \
        ("QUEUED", 4, "00-0af7651916cd43dd8448eb211c80319c")
    with_inputs = repo.submit_job(s, tenant="acme", request_id=None, kind="UNDERSTAND", params={"question": "q"},
                                  input_keys={"image": "inputs/x/image"})
    assert repo.load_job(s, with_inputs.job.id).input_keys == {"image": "inputs/x/image"}


def test_positions_of_jobs_not_in_line_are_zero(s):
    queued, running, gone = submit(s).job, submit(s).job, submit(s).job
    attempts.claim_job(s, running.id, "w1", heartbeat_timeout_s=60)
    repo.request_cancel(s, "acme", gone.id)
    repo.delete_job(s, "acme", gone.id)
    assert repo.queue_positions(s, [queued, running, gone]) == {queued.id: 1, running.id: 0, gone.id: 0}
    assert repo.get_job_and_position(s, "acme", running.id)[1] == 0
    assert repo.get_job_and_position(s, "globex", queued.id) is None  # another tenant's job
    assert repo.get_job_and_position(s, "acme", A_MISSING_ID) is None
    assert {row.id: place for row, place in repo.list_jobs_and_positions(s, "acme")[0]} == \
        {queued.id: 1, running.id: 0}


# ---------------------------------------------------------------- cancel


def test_cancelling_a_running_job_asks_its_worker_to_stop(s):
    job = submit(s).job
    attempts.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    cancelled = repo.request_cancel(s, "acme", job.id)
    assert (cancelled.state, cancelled.cancel_requested, cancelled.finished_at) == ("CANCELLING", True, None)


def test_a_job_claimed_while_being_cancelled_is_stopped_not_marked_cancelled(s, Session, monkeypatch):
    """The cancel read QUEUED, then a worker claimed the job before the cancel's write: the job is RUNNING, so
    the cancel must ask the worker to stop (CANCELLING), not write CANCELLED under a running worker."""
    job = submit(s).job
    real_get_job = repo.get_job
    reads = []

    def get_job_then_a_worker_claims_it(session, tenant, job_id):
        found = real_get_job(session, tenant, job_id)
        reads.append(found.state)
        if len(reads) == 1:
            with Session() as worker:
                attempts.claim_job(worker, job_id, "w1", heartbeat_timeout_s=60)
        return found

    monkeypatch.setattr(repo, "get_job", get_job_then_a_worker_claims_it)
    assert repo.request_cancel(s, "acme", job.id).state == "CANCELLING"
    assert reads == ["QUEUED", "RUNNING"]


def test_a_job_that_keeps_changing_under_a_cancel_is_refused_after_the_tries(s, monkeypatch):
    job = submit(s).job
    tries = []
    monkeypatch.setattr(repo, "shift", lambda *args, **values: tries.append(args) or [])
    assert refusal(lambda: repo.request_cancel(s, "acme", job.id)) == \
        f"FailedPrecondition: job {job.id} keeps changing state; try again"
    assert len(tries) == repo.RACE_TRIES
    monkeypatch.undo()
    assert repo.load_job(s, job.id).state == "QUEUED"


# ---------------------------------------------------------------- paging


def test_the_last_page_exactly_full_has_no_next_token(s):
    jobs = [submit(s).job for _ in range(3)]
    page, token = repo.list_jobs(s, "acme", page_size=3)
    assert ([row.id for row in page], token) == ([job.id for job in reversed(jobs)], None)
    page, token = repo.list_jobs(s, "acme", page_size=2)
    assert len(page) == 2 and token is not None
    page, token = repo.list_jobs(s, "acme", page_size=2, page_token=token)
    assert ([row.id for row in page], token) == ([jobs[0].id], None)


def test_jobs_created_at_the_same_instant_are_each_listed_once(s):
    jobs = [submit(s).job for _ in range(5)]
    s.execute(update(Job).values(created_at=utcnow()))
    s.commit()
    seen, token = [], None
    while True:
        page, token = repo.list_jobs(s, "acme", page_size=2, page_token=token)
        seen += [row.id for row in page]
        if token is None:
            break
    assert seen == sorted((job.id for job in jobs), reverse=True)


def test_the_list_filters_by_state_and_kind(s):
    text_to_image = submit(s).job
    understand = repo.submit_job(s, tenant="acme", request_id=None, kind="UNDERSTAND", params={"question": "q"},
                                 input_keys={}).job
    repo.request_cancel(s, "acme", understand.id)
    assert [row.id for row in repo.list_jobs(s, "acme", state="CANCELLED")[0]] == [understand.id]
    assert [row.id for row in repo.list_jobs(s, "acme", kind="TEXT_TO_IMAGE")[0]] == [text_to_image.id]
    assert repo.list_jobs(s, "acme", state="QUEUED", kind="UNDERSTAND")[0] == []


def _token(value, pad: int = 0) -> str:
    """A page token as `_encode_page_token` makes one, its JSON padded with `pad` spaces (JSON allows them)."""
    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw[:-1] + b" " * pad + raw[-1:]).decode().rstrip("=")


def test_a_page_token_of_any_length_up_to_the_limit_is_read_and_one_past_is_refused(s):
    older, newer = submit(s).job, submit(s).job
    position = [newer.created_at.isoformat(), newer.id]
    for pad in range(12):  # every length modulo 4 and 5: tokens differ in length (whole-second times are shorter)
        assert [row.id for row in repo.list_jobs(s, "acme", page_token=_token(position, pad))[0]] == [older.id]
    padded = [_token(position, pad) for pad in range(200)]
    at_limit = next(token for token in padded if len(token) == repo.MAX_PAGE_TOKEN_CHARS)
    assert [row.id for row in repo.list_jobs(s, "acme", page_token=at_limit)[0]] == [older.id]
    past = next(token for token in padded if len(token) > repo.MAX_PAGE_TOKEN_CHARS and len(token) % 4 == 0)
    assert json.loads(base64.urlsafe_b64decode(past)) == position  # it decodes: refused for its length alone
    assert refusal(lambda: repo.list_jobs(s, "acme", page_token=past)) == \
        "InvalidArgument: page_token: is not a token returned by ListJobs"


def test_a_page_token_with_more_than_a_time_and_an_id_is_refused(s):
    job = submit(s).job
    for bad in ([job.created_at.isoformat(), job.id, "more"], {"created_at": job.id, "id": job.id}):
        assert refusal(lambda: repo.list_jobs(s, "acme", page_token=_token(bad))) == \
            "InvalidArgument: page_token: is not a token returned by ListJobs"


# ---------------------------------------------------------------- retention


def test_retention_takes_jobs_finished_before_the_cutoff_oldest_first(s):
    jobs = [submit(s).job for _ in range(3)]
    cutoff = utcnow()
    for job, age in zip(jobs, (timedelta(0), timedelta(microseconds=1), timedelta(seconds=5))):
        repo.request_cancel(s, "acme", job.id)
        s.execute(update(Job).where(Job.id == job.id).values(finished_at=cutoff - age))
    s.commit()
    # At the cutoff is not before it; one microsecond before is.
    assert repo.finished_before(s, cutoff) == [(jobs[2].id, "CANCELLED"), (jobs[1].id, "CANCELLED")]
    assert repo.finished_before(s, cutoff, limit=1) == [(jobs[2].id, "CANCELLED")]
    assert s.scalar(select(func.count()).select_from(Job)) == 3
