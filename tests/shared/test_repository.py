import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import attempts
from shared import repository as repo
from shared.db import ApiKey, Job
from shared.db.types import utcnow
from shared.jobs import InvalidArgument


def submit(s, tenant="acme", request_id=None, priority=0, kind="TEXT_TO_IMAGE"):
    job = repo.submit_job(
        s, tenant=tenant, request_id=request_id, kind=kind, params={"prompt": "p"}, input_keys={}, priority=priority
    ).job
    return job


def age_heartbeat(s, job_id, seconds):
    s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    s.commit()


def test_submit_is_idempotent_per_tenant_and_request_id(s):
    submitted = repo.submit_job(
        s, tenant="acme", request_id="r1", kind="UNDERSTAND", params={"question": "q"},
        input_keys={"image": "inputs/x/image"}, priority=3,
    )
    first, created = submitted.job, submitted.created
    submitted = repo.submit_job(
        s, tenant="acme", request_id="r1", kind="UNDERSTAND", params={"question": "other"}, input_keys={}, priority=0
    )
    again, created_again = submitted.job, submitted.created
    submitted = repo.submit_job(
        s, tenant="globex", request_id="r1", kind="UNDERSTAND", params={}, input_keys={}, priority=0
    )
    other_tenant, created_other = submitted.job, submitted.created
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id and again.params == {"question": "q"}
    assert other_tenant.id != first.id
    assert first.state == "QUEUED" and first.attempts == 0 and first.created_at.tzinfo is not None
    # No request id: never deduplicated.
    assert submit(s).id != submit(s).id


def test_find_job_by_request_id_sees_only_the_tenants_own_job(s):
    job = submit(s, tenant="acme", request_id="r7")
    found = repo.find_job_by_request_id(s, "acme", "r7")
    assert found is not None and found.id == job.id
    assert repo.find_job_by_request_id(s, "globex", "r7") is None
    assert repo.find_job_by_request_id(s, "acme", "r8") is None
    # The read ends its transaction: a writer can change the job right after it, and the next read sees it.
    repo.request_cancel(s, "acme", job.id)
    assert repo.find_job_by_request_id(s, "acme", "r7").state == "CANCELLED"


def test_concurrent_submits_with_one_request_id_make_one_job(Session):
    ids, barrier = [], threading.Barrier(2)

    def worker():
        with Session() as s:
            barrier.wait()
            ids.append(submit(s, request_id="same").id)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    assert len(ids) == 2 and ids[0] == ids[1]


def test_tenants_cannot_see_each_others_jobs(s):
    job = submit(s, tenant="acme")
    assert repo.get_job(s, "acme", job.id).id == job.id
    assert repo.get_job(s, "globex", job.id) is None
    with pytest.raises(repo.JobNotFound):
        repo.request_cancel(s, "globex", job.id)
    with pytest.raises(repo.JobNotFound):
        repo.delete_job(s, "globex", job.id)
    assert repo.list_jobs(s, "globex") == ([], None)


def test_list_jobs_pages_newest_first_with_filters(s):
    base = utcnow()
    for i in range(7):
        job = submit(s, kind="EDIT" if i % 2 else "TEXT_TO_IMAGE")
        job.created_at = base + timedelta(seconds=i // 2)  # ties on created_at are broken by id
        s.commit()
    seen, token = [], None
    while True:
        page, token = repo.list_jobs(s, "acme", page_size=3, page_token=token)
        seen += page
        if token is None:
            break
        assert len(page) == 3
    assert len(seen) == 7 and len({j.id for j in seen}) == 7
    keys = [(j.created_at, j.id) for j in seen]
    assert keys == sorted(keys, reverse=True)
    edits, _ = repo.list_jobs(s, "acme", kind="EDIT")
    assert len(edits) == 3 and all(j.kind == "EDIT" for j in edits)
    assert repo.list_jobs(s, "acme", state="RUNNING") == ([], None)
    with pytest.raises(InvalidArgument) as info:
        repo.list_jobs(s, "acme", page_token="not-a-token")
    assert info.value.field == "page_token"


def test_queue_position_orders_by_priority_then_age(s):
    low_old = submit(s, priority=0)
    high = submit(s, priority=5)
    low_new = submit(s, priority=0)
    low_new.created_at = low_old.created_at + timedelta(seconds=1)
    s.commit()
    assert [repo.queue_position(s, j) for j in (high, low_old, low_new)] == [1, 2, 3]
    assert repo.count_queued(s) == 3 and repo.count_queued(s, "acme") == 3 and repo.count_queued(s, "x") == 0
    claimed = attempts.claim_job(s, high.id, "w1", heartbeat_timeout_s=60).job
    assert repo.queue_position(s, claimed) == 0
    assert repo.queue_position(s, low_old) == 1
    assert repo.count_backlog(s) == 3


def test_cancel_semantics(s):
    queued = submit(s)
    cancelled = repo.request_cancel(s, "acme", queued.id)
    assert cancelled.state == "CANCELLED" and cancelled.cancel_requested and cancelled.finished_at
    assert attempts.claim_job(s, queued.id, "w1", heartbeat_timeout_s=60) is None  # never runs

    running = submit(s)
    attempt = attempts.claim_job(s, running.id, "w1", heartbeat_timeout_s=60)
    assert attempts.check_attempt(s, attempt) is attempts.AttemptStatus.OWNED
    cancelling = repo.request_cancel(s, "acme", running.id)
    assert cancelling.state == "CANCELLING"
    assert attempts.check_attempt(s, attempt) is attempts.AttemptStatus.CANCEL_REQUESTED
    assert attempts.heartbeat(s, attempt)  # still the worker's to stop
    assert repo.request_cancel(s, "acme", running.id).state == "CANCELLING"  # idempotent
    assert attempts.mark_cancelled(s, attempt).state == "CANCELLED"
    assert repo.request_cancel(s, "acme", running.id).state == "CANCELLED"  # terminal: unchanged

    orphan = submit(s)  # cancel requested, then its worker died: the reaper finishes the cancel
    attempts.claim_job(s, orphan.id, "w1", heartbeat_timeout_s=60)
    repo.request_cancel(s, "acme", orphan.id)
    age_heartbeat(s, orphan.id, 120)
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [orphan.id])
    assert repo.load_job(s, orphan.id).state == "CANCELLED"


def test_delete_only_finished_jobs(s):
    job = submit(s)
    with pytest.raises(repo.FailedPrecondition):
        repo.delete_job(s, "acme", job.id)
    repo.request_cancel(s, "acme", job.id)
    assert repo.delete_job(s, "acme", job.id).id == job.id
    assert repo.get_job(s, "acme", job.id) is None


def test_retention_lists_old_finished_jobs_and_marks_them_expired(s):
    old, recent, running = submit(s), submit(s), submit(s)
    for job in (old, recent):
        attempt = attempts.claim_job(s, job.id, "w", heartbeat_timeout_s=60)
        attempts.finish_job(s, attempt, output_keys={"image": f"results/{job.id}/1/image.png"}, output_text="hi")
    attempts.claim_job(s, running.id, "w", heartbeat_timeout_s=60)
    s.execute(update(Job).where(Job.id.in_([old.id, running.id])).values(finished_at=utcnow() - timedelta(days=8)))
    s.commit()

    assert repo.finished_before(s, utcnow() - timedelta(days=7)) == [(old.id, "SUCCEEDED")]
    assert repo.load_job(s, old.id).output_keys == {"image": f"results/{old.id}/1/image.png"}  # until marked
    assert repo.mark_expired(s, old.id, "SUCCEEDED")
    stored = repo.load_job(s, old.id)
    assert stored.state == "EXPIRED" and stored.output_keys == {} and stored.output_text is None
    assert not repo.mark_expired(s, old.id, "SUCCEEDED")  # moved on: nothing to do
    assert repo.load_job(s, recent.id).state == "SUCCEEDED"
    assert repo.finished_before(s, utcnow() - timedelta(days=7)) == []  # an expired job is not listed again


def test_queued_before_finds_jobs_to_resend(s):
    job = submit(s, priority=4)
    assert repo.queued_before(s, utcnow() - timedelta(minutes=5)) == []
    assert repo.queued_before(s, utcnow() + timedelta(seconds=1)) == [(job.id, 4)]


def test_queued_before_lists_the_highest_priority_first_then_the_oldest_up_to_its_limit(s):
    now = utcnow()
    ages = {(0, 30): None, (9, 10): None, (5, 20): None, (9, 40): None, (5, 50): None, (9, 1): None}
    for priority, minutes in ages:
        job = submit(s, priority=priority)
        s.execute(update(Job).where(Job.id == job.id).values(created_at=now - timedelta(minutes=minutes)))
        ages[priority, minutes] = job.id
    s.commit()
    cutoff = now - timedelta(minutes=5)  # the one-minute-old job is too young to be re-sent
    expected = [(ages[9, 40], 9), (ages[9, 10], 9), (ages[5, 50], 5), (ages[5, 20], 5), (ages[0, 30], 0)]
    assert repo.queued_before(s, cutoff) == expected
    for limit in (1, 2, 3, 5, 6):
        assert repo.queued_before(s, cutoff, limit=limit) == expected[:limit]


def test_api_keys_are_stored_hashed(s):
    key = repo.create_api_key(s, "acme")
    assert key.startswith("llada_") and len(key) > 40
    stored = s.scalars(select(ApiKey)).all()
    assert len(stored) == 1 and key not in stored[0].key_hash and stored[0].tenant == "acme"
    assert repo.tenant_for_api_key(s, key) == "acme"
    assert repo.tenant_for_api_key(s, key + "x") is None
    assert repo.tenant_for_api_key(s, "") is None
    repo.register_api_key(s, "default", "embedded-demo-key-0123")
    repo.register_api_key(s, "default", "embedded-demo-key-0123")  # idempotent
    assert repo.tenant_for_api_key(s, "embedded-demo-key-0123") == "default"
    assert repo.revoke_api_key(s, key[:repo.API_KEY_PREFIX_CHARS]) and repo.tenant_for_api_key(s, key) is None


def test_reads_hold_no_lock_that_blocks_a_worker(tmp_path):
    """A gateway session left open after reads must not stall a worker's write (SQLite's one writer lock)."""
    from shared.db import make_engine, session_factory, upgrade

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(url)
    engine = make_engine(url, sqlite_busy_timeout_ms=300)
    Session = session_factory(engine)
    with Session() as gateway, Session() as worker:
        job = submit(gateway)
        repo.get_job(gateway, "acme", job.id)
        repo.list_jobs(gateway, "acme")
        repo.queue_position(gateway, job)
        repo.count_queued(gateway, "acme")
        repo.tenant_for_api_key(gateway, "nope")
        attempt = attempts.claim_job(worker, job.id, "w1", heartbeat_timeout_s=60)
        assert attempts.check_attempt(gateway, attempt) is attempts.AttemptStatus.OWNED
        assert attempts.heartbeat(worker, attempt)
    engine.dispose()
