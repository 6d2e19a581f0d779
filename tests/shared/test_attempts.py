"""The attempt token fences every write of a worker (shared.attempts): claims, leases by the database's clock,
progress, cancel checks and terminal writes — on SQLite and Postgres."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, text, update

from shared import attempts
from shared import repository as repo
from shared.attempts import AttemptFenced, AttemptStatus
from shared.db import Job
from shared.db.types import utcnow

FENCED, OWNED, CANCEL = AttemptStatus.FENCED, AttemptStatus.OWNED, AttemptStatus.CANCEL_REQUESTED


def submit(s, tenant="acme"):
    job = repo.submit_job(s, tenant=tenant, request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                             input_keys={}, priority=0).job
    return job


def claim(s, job_id, worker_id="w1", **kwargs):
    return attempts.claim_job(s, job_id, worker_id, heartbeat_timeout_s=60, **kwargs)


def age_heartbeat(s, job_id, seconds):
    s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))
    s.commit()


def test_claim_returns_the_attempt_token_and_its_writes_land(s):
    job = submit(s)
    attempt = claim(s, job.id)
    assert (attempt.job_id, attempt.number, attempt.worker_id) == (job.id, 1, "w1")
    assert attempt.job.state == "RUNNING" and attempt.job.heartbeat_at and attempt.job.started_at
    assert claim(s, job.id, "w2") is None  # duplicate delivery while the attempt is alive: a no-op
    assert attempts.heartbeat(s, attempt) and attempts.record_progress(s, attempt, "denoise", 3, 8)
    stored = repo.load_job(s, job.id)
    assert (stored.stage, stored.progress_step, stored.progress_total) == ("denoise", 3, 8)

    done = attempts.finish_job(s, attempt, output_keys={"image": f"results/{job.id}/1/image.png"},
                               timings={"denoise": 1.5}, seed=7)
    assert (done.state, done.output_keys, done.timings, done.result_seed) == (
        "SUCCEEDED", {"image": f"results/{job.id}/1/image.png"}, {"denoise": 1.5}, 7)
    assert done.finished_at is not None
    # Terminal: a re-delivery, a second ending and further progress are all refused.
    assert claim(s, job.id, "w3") is None
    with pytest.raises(AttemptFenced, match="SUCCEEDED"):
        attempts.fail_job(s, attempt, code="X", message="late")
    assert not attempts.record_progress(s, attempt, "decode", 1, 1)
    assert attempts.check_attempt(s, attempt) is FENCED
    assert claim(s, "no-such-job") is None


def test_fail_job_records_the_error(s):
    attempt = claim(s, submit(s).id)
    failed = attempts.fail_job(s, attempt, code="INVALID_ARGUMENT", message="image is not decodable", field="image")
    assert (failed.state, failed.error_code, failed.error_field) == ("FAILED", "INVALID_ARGUMENT", "image")


def test_a_stale_attempt_taken_over_can_write_nothing(s):
    """Attempt 1 pauses past its lease, attempt 2 claims and finishes; attempt 1 wakes up and tries everything."""
    job = submit(s)
    first = claim(s, job.id, "w1")
    age_heartbeat(s, job.id, 120)
    second = claim(s, job.id, "w2")
    assert second.number == 2 and second != first
    attempts.finish_job(s, second, output_keys={"image": f"results/{job.id}/2/image.png"}, seed=2)

    assert not attempts.heartbeat(s, first)
    assert not attempts.record_progress(s, first, "decode", 8, 8)
    assert attempts.check_attempt(s, first) is FENCED
    with pytest.raises(AttemptFenced, match="attempt 2 has claimed it since"):
        attempts.finish_job(s, first, output_keys={"image": f"results/{job.id}/1/image.png"}, seed=1)
    with pytest.raises(AttemptFenced):
        attempts.mark_cancelled(s, first)
    stored = repo.load_job(s, job.id)
    assert (stored.state, stored.result_seed, stored.output_keys, stored.progress_step) == (
        "SUCCEEDED", 2, {"image": f"results/{job.id}/2/image.png"}, 0)


def test_a_stale_attempt_cannot_write_while_the_new_one_runs(s):
    job = submit(s)
    first = claim(s, job.id, "w1")
    age_heartbeat(s, job.id, 120)
    second = claim(s, job.id, "w2")
    assert attempts.record_progress(s, second, "denoise", 2, 8)

    assert not attempts.heartbeat(s, first)
    assert not attempts.record_progress(s, first, "decode", 8, 8)
    assert attempts.check_attempt(s, first) is FENCED
    for end in (lambda: attempts.finish_job(s, first, output_keys={"image": "results/x/1/image.png"}),
                lambda: attempts.fail_job(s, first, code="X", message="late"),
                lambda: attempts.mark_cancelled(s, first)):
        with pytest.raises(AttemptFenced, match="attempt 2 has claimed it since"):
            end()
    stored = repo.load_job(s, job.id)
    assert (stored.state, stored.worker_id, stored.stage, stored.progress_step) == ("RUNNING", "w2", "denoise", 2)
    assert attempts.finish_job(s, second, output_keys={}).state == "SUCCEEDED"


def test_one_worker_reclaiming_its_own_stale_job_tells_its_attempts_apart(s):
    """Same worker id both times (a thread pool's threads share the process id): the number fences."""
    job = submit(s)
    first = claim(s, job.id, "host:1:abc")
    age_heartbeat(s, job.id, 120)
    second = claim(s, job.id, "host:1:abc")
    assert first.worker_id == second.worker_id and first != second
    assert not attempts.heartbeat(s, first) and attempts.heartbeat(s, second)
    assert attempts.check_attempt(s, first) is FENCED and attempts.check_attempt(s, second) is OWNED


def test_a_reaped_attempt_is_fenced_before_anyone_claims_again(s):
    job = submit(s)
    attempt = claim(s, job.id)
    age_heartbeat(s, job.id, 120)
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([job.id], [])
    assert not attempts.heartbeat(s, attempt) and attempts.check_attempt(s, attempt) is FENCED
    with pytest.raises(AttemptFenced, match="QUEUED"):
        attempts.finish_job(s, attempt, output_keys={})
    assert repo.load_job(s, job.id).state == "QUEUED"


def test_a_deleted_jobs_attempt_is_fenced(s):
    job = submit(s)
    attempt = claim(s, job.id)
    s.execute(delete(Job).where(Job.id == job.id))
    s.commit()
    assert not attempts.heartbeat(s, attempt)
    assert attempts.check_attempt(s, attempt) is FENCED
    with pytest.raises(AttemptFenced, match="deleted"):
        attempts.finish_job(s, attempt, output_keys={})


def test_a_cancel_is_the_attempts_to_acknowledge_until_the_reaper_takes_it(s):
    job = submit(s)
    attempt = claim(s, job.id)
    repo.request_cancel(s, "acme", job.id)
    assert attempts.check_attempt(s, attempt) is CANCEL
    age_heartbeat(s, job.id, 120)
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [job.id])
    with pytest.raises(AttemptFenced, match="CANCELLED"):
        attempts.finish_job(s, attempt, output_keys={"image": "late"})  # a cancelled job never gets outputs
    stored = repo.load_job(s, job.id)
    assert (stored.state, stored.output_keys) == ("CANCELLED", {})


def test_stale_attempt_is_taken_over_then_dead_lettered_at_max_attempts(s):
    job = submit(s)
    claim(s, job.id, "w1")
    age_heartbeat(s, job.id, 120)
    assert claim(s, job.id, "w2").number == 2
    age_heartbeat(s, job.id, 120)
    assert claim(s, job.id, "w3", max_attempts=2) is None
    dead = repo.load_job(s, job.id)
    assert dead.state == "FAILED" and dead.error_code == attempts.WORKER_LOST


def test_reaper_requeues_stale_jobs_then_dead_letters_after_max_attempts(s):
    job, fresh = submit(s), submit(s)
    claim(s, fresh.id, "w-alive")
    for number in (1, 2, 3):
        assert claim(s, job.id, f"w{number}").number == number
        age_heartbeat(s, job.id, 120)
        requeued, dead = attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3)
        if number < 3:
            assert (requeued, dead) == ([job.id], [])
            again = repo.load_job(s, job.id)
            assert again.state == "QUEUED" and again.worker_id is None
        else:
            assert (requeued, dead) == ([], [job.id])
    dead_job = repo.load_job(s, job.id)
    assert dead_job.state == "FAILED" and dead_job.error_code == attempts.WORKER_LOST
    assert "3 attempts" in dead_job.error_message
    assert repo.load_job(s, fresh.id).state == "RUNNING"  # a live heartbeat is never reaped
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [])


def test_leases_are_judged_by_the_databases_clock_not_the_workers(s, monkeypatch):
    """Process clocks an hour off change nothing: the lease is stamped and judged by the database's clock."""
    behind = utcnow() - timedelta(hours=1)
    for module in (attempts, repo):
        monkeypatch.setattr(module, "utcnow", lambda: behind)
    job = submit(s)
    attempt = claim(s, job.id)
    assert attempts.heartbeat(s, attempt)

    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=3) == ([], [])
    assert claim(s, job.id, "w2") is None
    stored = repo.load_job(s, job.id).heartbeat_at
    database_now = s.scalar(select(text("CURRENT_TIMESTAMP")))
    s.commit()
    if isinstance(database_now, str):  # SQLite answers text, in UTC
        from datetime import datetime, timezone
        database_now = datetime.fromisoformat(database_now).replace(tzinfo=timezone.utc)
    assert abs(stored - database_now) < timedelta(seconds=5)


def test_concurrent_claim_has_exactly_one_winner(Session):
    with Session() as s:
        job_ids = [submit(s).id for _ in range(4)]
    for job_id in job_ids:
        results, barrier = [], threading.Barrier(2)

        def race(worker_id, job_id=job_id, barrier=barrier, results=results):
            with Session() as s:
                barrier.wait()
                results.append(attempts.claim_job(s, job_id, worker_id, heartbeat_timeout_s=60))

        threads = [threading.Thread(target=race, args=(f"w{i}",)) for i in range(2)]
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
        assert attempts.claim_job(other, job.id, "w2", heartbeat_timeout_s=60) is None  # returns at once
        holder.rollback()
        assert attempts.claim_job(other, job.id, "w2", heartbeat_timeout_s=60).worker_id == "w2"


def test_a_handed_back_attempt_is_queued_at_once_and_not_counted_as_a_failure(s):
    job = submit(s)
    for number in (1, 2, 3):  # three scale-downs in a row: the job is never dead-lettered for them
        attempt = claim(s, job.id, f"w{number}", max_attempts=1)
        assert attempt.number == number
        attempts.record_progress(s, attempt, "denoise", 3, 8)
        back = attempts.hand_back(s, attempt)
        assert (back.state, back.worker_id, back.progress_step, back.handed_back) == ("QUEUED", None, 0, number)
        assert attempts.check_attempt(s, attempt) is FENCED
    last = claim(s, job.id, "w4", max_attempts=1)
    age_heartbeat(s, job.id, 120)  # this one dies: its one failed attempt is the limit
    assert attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=1) == ([], [job.id])
    dead = repo.load_job(s, job.id)
    assert (dead.state, dead.attempts, dead.handed_back) == ("FAILED", 4, 3)
    assert "each of 1 attempts" in dead.error_message and last.number == 4


def test_handing_back_a_job_with_a_cancel_pending_cancels_it_and_a_fenced_attempt_hands_back_nothing(s):
    job = submit(s)
    attempt = claim(s, job.id)
    repo.request_cancel(s, "acme", job.id)
    assert attempts.hand_back(s, attempt).state == "CANCELLED"
    with pytest.raises(AttemptFenced):
        attempts.hand_back(s, attempt)

    other = submit(s)
    stale = claim(s, other.id, "w1")
    age_heartbeat(s, other.id, 120)
    claim(s, other.id, "w2")
    with pytest.raises(AttemptFenced, match="attempt 2"):
        attempts.hand_back(s, stale)
    assert repo.load_job(s, other.id).state == "RUNNING"


def test_a_terminal_write_retried_after_its_commit_landed_succeeds_again(s):
    """The connection dropped after the commit, before its answer: the worker retries the same write, and
    must not take the job it just finished for someone else's (it would delete its own outputs)."""
    job = submit(s)
    attempt = claim(s, job.id)
    keys = {"image": f"results/{job.id}/1/image.png"}
    first = attempts.finish_job(s, attempt, output_keys=keys, seed=5)
    again = attempts.finish_job(s, attempt, output_keys=keys, seed=5)
    assert (again.state, again.output_keys, again.result_seed) == ("SUCCEEDED", keys, 5) == \
        (first.state, first.output_keys, first.result_seed)
    failed = attempts.fail_job(s, claim(s, submit(s).id), code="X", message="bad")
    assert attempts.fail_job(s, attempts.Attempt(failed.id, 1, failed.worker_id, failed),
                             code="X", message="bad").state == "FAILED"


def test_another_ending_or_another_attempts_row_is_still_fenced(s):
    job = submit(s)
    attempt = claim(s, job.id)
    attempts.finish_job(s, attempt, output_keys={"image": f"results/{job.id}/1/image.png"})
    with pytest.raises(AttemptFenced, match="SUCCEEDED"):
        attempts.fail_job(s, attempt, code="X", message="late")  # not the ending that landed
    with pytest.raises(AttemptFenced):
        attempts.finish_job(s, attempt, output_keys={"image": "results/other/1/image.png"})  # not its outputs
    job = submit(s)
    first = claim(s, job.id, "w1")
    age_heartbeat(s, job.id, 120)
    second = claim(s, job.id, "w2")
    attempts.finish_job(s, second, output_keys={})
    with pytest.raises(AttemptFenced, match="attempt 2 has claimed it since"):
        attempts.finish_job(s, first, output_keys={})  # same outputs, but the row is attempt 2's


def understand_job(s, tenant="acme"):
    return repo.submit_job(s, tenant=tenant, request_id=None, kind="UNDERSTAND", params={"question": "q"},
                           input_keys={}, priority=0).job


def test_an_answer_so_far_is_the_owners_to_write_and_each_new_start_clears_it(s):
    job = understand_job(s)
    first = claim(s, job.id)
    assert attempts.record_answer(s, first, "a red")
    assert repo.load_job(s, job.id).output_text == "a red"
    age_heartbeat(s, job.id, 120)
    second = claim(s, job.id, "w2")  # the first worker stalled: the next attempt starts from nothing
    assert repo.load_job(s, job.id).output_text is None
    assert not attempts.record_answer(s, first, "a red circle, late")  # the stalled one is fenced off
    assert attempts.record_answer(s, second, "a blue")
    attempts.hand_back(s, second)
    assert repo.load_job(s, job.id).output_text is None
    third = claim(s, job.id, "w3")
    assert attempts.record_answer(s, third, "a blue square")
    done = attempts.finish_job(s, third, output_keys={}, output_text="a blue square at the top")
    assert done.output_text == "a blue square at the top"


@pytest.mark.parametrize("end", ["fail", "cancel", "reap"])
def test_a_job_that_ends_without_an_answer_keeps_no_partial_one(s, end):
    job = understand_job(s)
    attempt = claim(s, job.id)
    assert attempts.record_answer(s, attempt, "half an ans")
    if end == "fail":
        attempts.fail_job(s, attempt, code="INTERNAL", message="boom")
    elif end == "cancel":
        attempts.mark_cancelled(s, attempt)
    else:
        age_heartbeat(s, job.id, 120)
        attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=1)  # its last attempt: dead letter
    stored = repo.load_job(s, job.id)
    assert stored.state in ("FAILED", "CANCELLED") and stored.output_text is None


def test_a_hand_back_does_not_count_toward_max_attempts_when_a_stale_job_is_claimed(s):
    """claim_job's own dead-letter check (a duplicate delivery of a stale job) counts failed attempts only."""
    job = submit(s)
    attempts.hand_back(s, claim(s, job.id, "w1"))  # a scale-down: not the job's fault
    claim(s, job.id, "w2")
    age_heartbeat(s, job.id, 120)  # w2 died: one failed attempt of two allowed
    taken = claim(s, job.id, "w3", max_attempts=2)
    assert taken is not None and taken.number == 3
    age_heartbeat(s, job.id, 120)  # w3 died too: two failed attempts
    assert claim(s, job.id, "w4", max_attempts=2) is None
    dead = repo.load_job(s, job.id)
    assert (dead.state, dead.error_code, dead.attempts, dead.handed_back) == ("FAILED", attempts.WORKER_LOST, 3, 1)
