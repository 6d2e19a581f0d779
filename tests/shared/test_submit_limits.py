"""Checked submits: backpressure atomic with the insert, queue position from the same transaction."""

import importlib.util
import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete, func, insert, select, text

import shared.db.migrations.versions as migrations_dir
from shared import repository as repo
from shared.db import Job, make_engine, session_factory
from shared.db.types import utcnow
from shared.jobs import JobState

LIMITS = repo.QueueLimits(per_tenant=3, total=5)


def checked_submit(s, tenant, request_id=None, limits=LIMITS, priority=0):
    return repo.submit_job(s, tenant=tenant, request_id=request_id, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                           input_keys={}, priority=priority, limits=limits)


def test_submit_returns_the_job_whether_it_was_created_and_its_queue_position(s):
    first = checked_submit(s, "acme")
    urgent = checked_submit(s, "acme", priority=5)
    job, created = first.job, first.created
    assert created and job.state == JobState.QUEUED.value and first.queue_position == 1
    assert urgent.queue_position == 1  # higher priority goes ahead of the older job
    assert repo.queue_position(s, first.job) == 2


def test_limits_refuse_per_tenant_then_in_total_and_store_nothing(s):
    for _ in range(3):
        checked_submit(s, "acme")
    with pytest.raises(repo.QueueFull) as err:
        checked_submit(s, "acme")
    assert err.value.scope == "tenant" and err.value.limit == 3
    checked_submit(s, "globex")
    checked_submit(s, "globex")
    with pytest.raises(repo.QueueFull) as err:
        checked_submit(s, "initech")
    assert err.value.scope == "total" and err.value.limit == 5
    assert repo.count_queued(s) == 5 and repo.count_queued(s, "initech") == 0


def test_an_idempotent_retry_is_answered_when_the_queue_is_full(s):
    first = checked_submit(s, "acme", request_id="r1", limits=repo.QueueLimits(per_tenant=1, total=1))
    again = checked_submit(s, "acme", request_id="r1", limits=repo.QueueLimits(per_tenant=1, total=1))
    assert again.job.id == first.job.id and not again.created and again.queue_position == 1


@pytest.mark.parametrize("scope, limits, tenants", [
    ("total", repo.QueueLimits(per_tenant=100, total=6), 2),
    ("tenant", repo.QueueLimits(per_tenant=6, total=100), 1),
])
def test_concurrent_submits_never_exceed_the_limit(Session, scope, limits, tenants):
    """Many threads submitting at once: exactly the limit's number of jobs get in, the rest are refused."""
    threads, results = 8, []
    start = threading.Barrier(threads)

    def client(i):
        with Session() as s:
            start.wait()
            for _ in range(3):
                try:
                    checked_submit(s, f"t{i % tenants}", limits=limits)
                    results.append("ok")
                except repo.QueueFull as refused:
                    results.append(refused.scope)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    with Session() as s:
        assert repo.count_queued(s) == 6
    assert results.count("ok") == 6 and results.count(scope) == 3 * threads - 6


def test_precheck_answers_a_retry_refuses_a_full_queue_and_inserts_nothing(s):
    limits = repo.QueueLimits(per_tenant=1, total=5)
    assert repo.precheck_submit(s, tenant="acme", request_id="r1", limits=limits) is None
    first = checked_submit(s, "acme", request_id="r1", limits=limits)
    earlier = repo.precheck_submit(s, tenant="acme", request_id="r1", limits=limits)
    assert earlier.job.id == first.job.id and not earlier.created and earlier.queue_position == 1
    with pytest.raises(repo.QueueFull):
        repo.precheck_submit(s, tenant="acme", request_id="r2", limits=limits)
    assert repo.precheck_submit(s, tenant="globex", request_id="r1", limits=limits) is None
    assert repo.count_queued(s) == 1


def _submit_lock_key() -> int:
    """The advisory lock key migration 0008's admission function takes (its module name starts with a digit)."""
    path = Path(migrations_dir.__file__).parent / "0008_queue_counts_and_tickets.py"
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SUBMIT_LOCK_KEY


def test_a_submit_waiting_for_the_lock_sees_what_committed_while_it_waited(postgres_url):
    """The admission reads the counts after the lock is granted, not as they were when its statement began:
    a submit held on the lock while another one fills the queue is refused once that one commits."""
    engine = make_engine(postgres_url)
    Session = session_factory(engine)
    outcome = {}
    try:
        with engine.connect() as holder:  # another checked submit, between its lock and its commit
            holder.execute(select(func.pg_advisory_xact_lock(_submit_lock_key())))
            holder.execute(insert(Job.__table__).values(
                id=str(uuid.uuid4()), tenant="first", kind="TEXT_TO_IMAGE", params={}, priority=0, input_keys={},
                state=JobState.QUEUED.value, progress_step=0, progress_total=0, attempts=0, handed_back=0,
                timings={}, output_keys={}, created_at=utcnow(), cancel_requested=False))

            def second():
                with Session() as s:
                    try:
                        outcome["job"] = checked_submit(s, "second", limits=repo.QueueLimits(per_tenant=5, total=1))
                    except repo.QueueFull as refused:
                        outcome["refused"] = refused.scope

            waiter = threading.Thread(target=second)
            waiter.start()
            deadline = time.monotonic() + 10
            with engine.connect() as probe:
                while not probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")):
                    assert time.monotonic() < deadline, "the second submit never waited for the lock"
                    probe.rollback()
                    time.sleep(0.01)
            holder.commit()
        waiter.join(10)
        assert outcome == {"refused": "total"}
        with Session() as s:
            assert repo.count_queued(s) == 1
    finally:
        with engine.begin() as conn:
            conn.execute(delete(Job))
        engine.dispose()
