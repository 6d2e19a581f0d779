"""Checked submits: backpressure atomic with the insert, queue position from the same transaction."""

import threading

import pytest

from shared import repository as repo
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
