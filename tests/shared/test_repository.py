import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import repository as repo
from shared.db import ApiKey, Job
from shared.db.types import utcnow
from shared.jobs import InvalidArgument, JobState
from shared.states import IllegalTransition


def submit(s, tenant="acme", request_id=None, priority=0, kind="TEXT_TO_IMAGE"):
    job, _ = repo.submit_job(
        s, tenant=tenant, request_id=request_id, kind=kind, params={"prompt": "p"}, input_keys={}, priority=priority
    )
    return job


def age_heartbeat(s, job_id, seconds):
    s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    s.commit()


def test_submit_is_idempotent_per_tenant_and_request_id(s):
    first, created = repo.submit_job(
        s, tenant="acme", request_id="r1", kind="UNDERSTAND", params={"question": "q"},
        input_keys={"image": "inputs/x/image"}, priority=3,
    )
    again, created_again = repo.submit_job(
        s, tenant="acme", request_id="r1", kind="UNDERSTAND", params={"question": "other"}, input_keys={}, priority=0
    )
    other_tenant, created_other = repo.submit_job(
        s, tenant="globex", request_id="r1", kind="UNDERSTAND", params={}, input_keys={}, priority=0
    )
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
    claimed = repo.claim_job(s, high.id, "w1", heartbeat_timeout_s=60)
    assert repo.queue_position(s, claimed) == 0
    assert repo.queue_position(s, low_old) == 1
    assert repo.count_backlog(s) == 3


def test_claim_heartbeat_progress_and_finish(s):
    job = submit(s)
    claimed = repo.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    assert claimed.state == "RUNNING" and claimed.attempts == 1 and claimed.worker_id == "w1"
    assert claimed.heartbeat_at is not None and claimed.started_at is not None
    # Duplicate delivery while the first run is alive: a no-op.
    assert repo.claim_job(s, job.id, "w2", heartbeat_timeout_s=60) is None
    assert repo.heartbeat(s, job.id, "w1") and not repo.heartbeat(s, job.id, "w2")
    assert repo.record_progress(s, job.id, "denoise", 3, 8)
    job = repo.load_job(s, job.id)
    assert (job.stage, job.progress_step, job.progress_total) == ("denoise", 3, 8)
    with pytest.raises(IllegalTransition):
        repo.finish_job(s, job.id, output_keys={"image": "k"}, worker_id="w2")  # not the owner
    done = repo.finish_job(s, job.id, output_keys={"image": "results/x/image.png"}, timings={"denoise": 1.5}, worker_id="w1")
    assert done.state == "SUCCEEDED" and done.finished_at is not None and done.timings == {"denoise": 1.5}
    # Terminal: re-delivery and a second finish are refused.
    assert repo.claim_job(s, job.id, "w3", heartbeat_timeout_s=60) is None
    with pytest.raises(IllegalTransition, match="SUCCEEDED → SUCCEEDED"):
        repo.finish_job(s, job.id, output_keys={})
    with pytest.raises(IllegalTransition, match="SUCCEEDED → FAILED"):
        repo.fail_job(s, job.id, code="X", message="late")
    assert repo.claim_job(s, "no-such-job", "w1", heartbeat_timeout_s=60) is None


def test_fail_job_records_the_error(s):
    job = submit(s)
    repo.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    failed = repo.fail_job(s, job.id, code="INVALID_ARGUMENT", message="image is not decodable", field="image")
    assert (failed.state, failed.error_code, failed.error_field) == ("FAILED", "INVALID_ARGUMENT", "image")


def test_concurrent_claim_has_exactly_one_winner(Session):
    with Session() as s:
        job_ids = [submit(s).id for _ in range(4)]
    for job_id in job_ids:
        results, barrier = [], threading.Barrier(2)

        def claim(worker_id, job_id=job_id, barrier=barrier, results=results):
            with Session() as s:
                barrier.wait()
                results.append(repo.claim_job(s, job_id, worker_id, heartbeat_timeout_s=60))

        threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(2)]
        [t.start() for t in threads]
        [t.join(30) for t in threads]
        winners = [r for r in results if r is not None]
        assert len(results) == 2 and len(winners) == 1
        with Session() as s:
            stored = repo.load_job(s, job_id)
            assert stored.attempts == 1 and stored.worker_id == winners[0].worker_id


def test_postgres_claim_skips_a_row_locked_by_another_claimer(Session, db_url):
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks are Postgres-only")
    with Session() as s:
        job = submit(s)
    with Session() as holder, Session() as other:
        holder.scalar(select(Job.id).where(Job.id == job.id).with_for_update())
        assert repo.claim_job(other, job.id, "w2", heartbeat_timeout_s=60) is None  # returns at once
        holder.rollback()
        assert repo.claim_job(other, job.id, "w2", heartbeat_timeout_s=60).worker_id == "w2"


def test_stale_running_job_is_taken_over_by_a_redelivery(s):
    job = submit(s)
    repo.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    age_heartbeat(s, job.id, 120)
    taken = repo.claim_job(s, job.id, "w2", heartbeat_timeout_s=60)
    assert taken.worker_id == "w2" and taken.attempts == 2
    assert not repo.heartbeat(s, job.id, "w1")  # the old run learns it lost the job
    age_heartbeat(s, job.id, 120)
    assert repo.claim_job(s, job.id, "w3", heartbeat_timeout_s=60, max_attempts=2) is None
    dead = repo.load_job(s, job.id)
    assert dead.state == "FAILED" and dead.error_code == repo.WORKER_LOST


def test_reaper_requeues_stale_jobs_then_dead_letters_after_max_attempts(s):
    job, fresh = submit(s), submit(s)
    repo.claim_job(s, fresh.id, "w-alive", heartbeat_timeout_s=60)
    for attempt in (1, 2, 3):
        claimed = repo.claim_job(s, job.id, f"w{attempt}", heartbeat_timeout_s=60)
        assert claimed.attempts == attempt
        age_heartbeat(s, job.id, 120)
        requeued, dead = repo.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3)
        if attempt < 3:
            assert (requeued, dead) == ([job.id], [])
            again = repo.load_job(s, job.id)
            assert again.state == "QUEUED" and again.worker_id is None
        else:
            assert (requeued, dead) == ([], [job.id])
    dead_job = repo.load_job(s, job.id)
    assert dead_job.state == "FAILED" and dead_job.error_code == repo.WORKER_LOST and "3 attempts" in dead_job.error_message
    assert repo.load_job(s, fresh.id).state == "RUNNING"  # a live heartbeat is never reaped
    assert repo.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [])


def test_cancel_semantics(s):
    queued = submit(s)
    cancelled = repo.request_cancel(s, "acme", queued.id)
    assert cancelled.state == "CANCELLED" and cancelled.cancel_requested and cancelled.finished_at
    assert repo.claim_job(s, queued.id, "w1", heartbeat_timeout_s=60) is None  # never runs

    running = submit(s)
    repo.claim_job(s, running.id, "w1", heartbeat_timeout_s=60)
    assert not repo.is_cancel_requested(s, running.id)
    cancelling = repo.request_cancel(s, "acme", running.id)
    assert cancelling.state == "CANCELLING" and repo.is_cancel_requested(s, running.id)
    assert repo.heartbeat(s, running.id, "w1")  # still the worker's to stop
    assert repo.request_cancel(s, "acme", running.id).state == "CANCELLING"  # idempotent
    assert repo.mark_cancelled(s, running.id, worker_id="w1").state == "CANCELLED"
    assert repo.request_cancel(s, "acme", running.id).state == "CANCELLED"  # terminal: unchanged

    orphan = submit(s)  # cancel requested, then its worker died: the reaper finishes the cancel
    repo.claim_job(s, orphan.id, "w1", heartbeat_timeout_s=60)
    repo.request_cancel(s, "acme", orphan.id)
    age_heartbeat(s, orphan.id, 120)
    assert repo.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [orphan.id])
    assert repo.load_job(s, orphan.id).state == "CANCELLED"


def test_delete_only_finished_jobs(s):
    job = submit(s)
    with pytest.raises(repo.FailedPrecondition):
        repo.delete_job(s, "acme", job.id)
    repo.request_cancel(s, "acme", job.id)
    assert repo.delete_job(s, "acme", job.id).id == job.id
    assert repo.get_job(s, "acme", job.id) is None


def test_expire_results_after_retention(s):
    old, recent = submit(s), submit(s)
    for job in (old, recent):
        repo.claim_job(s, job.id, "w", heartbeat_timeout_s=60)
        repo.finish_job(s, job.id, output_keys={"image": f"results/{job.id}/image.png"}, output_text="hi")
    s.execute(update(Job).where(Job.id == old.id).values(finished_at=utcnow() - timedelta(days=8)))
    s.commit()
    expired = repo.expire_results(s, older_than=utcnow() - timedelta(days=7))
    assert [j.id for j in expired] == [old.id]
    assert expired[0].output_keys == {"image": f"results/{old.id}/image.png"}  # for deleting the objects
    stored = repo.load_job(s, old.id)
    assert stored.state == "EXPIRED" and stored.output_keys == {} and stored.output_text is None
    assert repo.load_job(s, recent.id).state == "SUCCEEDED"


def test_queued_before_finds_jobs_to_resend(s):
    job = submit(s, priority=4)
    assert repo.queued_before(s, utcnow() - timedelta(minutes=5)) == []
    assert repo.queued_before(s, utcnow() + timedelta(seconds=1)) == [(job.id, 4)]


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
        assert repo.claim_job(worker, job.id, "w1", heartbeat_timeout_s=60) is not None
        assert repo.is_cancel_requested(gateway, job.id) is False
        assert repo.heartbeat(worker, job.id, "w1")
    engine.dispose()
