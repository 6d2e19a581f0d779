"""The attempt's writes and the reaper's side at their edges, on SQLite and Postgres: each write moves only its own
job (a bystander in the same state is left alone), a lease renewed between the reaper's read and its write keeps
the job, every field an ending or a re-queue resets is reset, and a fenced attempt is told why from the database,
not from what its session read before."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import attempts
from shared import repository as repo
from shared.attempts import AttemptFenced
from shared.db import Job
from shared.db.types import utcnow

TIMEOUT_S = 60


def submit(s):
    return repo.submit_job(s, tenant="acme", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                           input_keys={}).job


def claim(s, job_id, worker_id="w1", **kwargs):
    return attempts.claim_job(s, job_id, worker_id, heartbeat_timeout_s=TIMEOUT_S, **kwargs)


def go_stale(s, *job_ids):
    s.execute(update(Job).where(Job.id.in_(job_ids)).values(heartbeat_at=utcnow() - timedelta(seconds=2 * TIMEOUT_S)))
    s.commit()


def running(s, *, progress=True):
    """A RUNNING job mid-way: a stage, progress and a partial answer, all of which a re-queue must clear."""
    job = submit(s)
    attempt = claim(s, job.id)
    if progress:
        attempts.record_progress(s, attempt, "denoise", 3, 8)
        attempts.record_answer(s, attempt, "half an ans")
    return attempt


def cancelling(s):
    attempt = running(s)
    repo.request_cancel(s, "acme", attempt.job_id)
    return attempt


def state(s, job_id):
    return repo.load_job(s, job_id)


def test_the_reaper_moves_each_stale_job_once_and_reports_each(s):
    stale_running = [running(s) for _ in range(2)]
    stale_cancelling = [cancelling(s) for _ in range(2)]
    exhausted = [running(s) for _ in range(2)]
    fresh_running, fresh_cancelling = running(s), cancelling(s)
    go_stale(s, *(a.job_id for a in stale_running + stale_cancelling + exhausted))
    s.execute(update(Job).where(Job.id.in_([a.job_id for a in exhausted])).values(attempts=3))
    s.commit()

    requeued, dead = attempts.reap_stale(s, heartbeat_timeout_s=TIMEOUT_S, max_attempts=3)

    assert sorted(requeued) == sorted(a.job_id for a in stale_running)
    assert sorted(dead) == sorted(a.job_id for a in stale_cancelling + exhausted)
    for attempt in stale_running:
        job = state(s, attempt.job_id)
        assert (job.state, job.worker_id, job.heartbeat_at, job.stage, job.progress_step, job.progress_total,
                job.output_text) == ("QUEUED", None, None, None, 0, 0, None)
    for attempt in stale_cancelling:
        job = state(s, attempt.job_id)
        assert (job.state, job.output_text) == ("CANCELLED", None) and job.finished_at is not None
    for attempt in exhausted:
        job = state(s, attempt.job_id)
        assert (job.state, job.error_code, job.output_text) == ("FAILED", "WORKER_LOST", None)
        assert job.error_message == "the worker stopped responding on each of 3 attempts; giving up"
        assert job.finished_at is not None
    assert (state(s, fresh_running.job_id).state, state(s, fresh_cancelling.job_id).state) == \
        ("RUNNING", "CANCELLING")


@pytest.mark.parametrize("kind", ["running", "cancelling", "exhausted"])
def test_a_lease_renewed_between_the_reapers_read_and_its_write_keeps_the_job(s, Session, monkeypatch, kind):
    """The worker was only slow: its heartbeat lands after the reaper listed the job as stale. The reaper's write
    is conditional on the same staleness, so the job stays with its worker."""
    attempt = cancelling(s) if kind == "cancelling" else running(s)
    go_stale(s, attempt.job_id)
    real_shift = attempts.shift

    def heartbeat_then_shift(session, *args, **values):
        with Session() as worker:
            assert attempts.heartbeat(worker, attempt)
        return real_shift(session, *args, **values)

    monkeypatch.setattr(attempts, "shift", heartbeat_then_shift)
    assert attempts.reap_stale(s, heartbeat_timeout_s=TIMEOUT_S,
                               max_attempts=1 if kind == "exhausted" else 3) == ([], [])
    assert state(s, attempt.job_id).state == ("CANCELLING" if kind == "cancelling" else "RUNNING")


def test_a_redelivered_cancel_finishes_only_its_own_job_and_only_once_its_worker_is_gone(s):
    gone, bystander, alive = cancelling(s), cancelling(s), cancelling(s)
    go_stale(s, gone.job_id, bystander.job_id)
    assert claim(s, gone.job_id, "w2") is None
    assert claim(s, alive.job_id, "w2") is None
    job = state(s, gone.job_id)
    assert (job.state, job.output_text) == ("CANCELLED", None) and job.finished_at is not None
    assert (state(s, bystander.job_id).state, state(s, alive.job_id).state) == ("CANCELLING", "CANCELLING")


def test_a_redelivered_exhausted_job_is_dead_lettered_alone_and_never_under_a_live_worker(s):
    gone, bystander, alive = running(s), running(s), running(s)
    go_stale(s, gone.job_id, bystander.job_id)
    s.execute(update(Job).values(attempts=3))
    s.commit()
    assert claim(s, gone.job_id, "w2", max_attempts=3) is None
    assert claim(s, alive.job_id, "w2", max_attempts=3) is None  # its worker still beats: a duplicate delivery
    job = state(s, gone.job_id)
    assert (job.state, job.error_code) == ("FAILED", "WORKER_LOST") and job.finished_at is not None
    assert (state(s, bystander.job_id).state, state(s, alive.job_id).state) == ("RUNNING", "RUNNING")


def test_a_hand_back_clears_the_attempts_traces(s):
    attempt = running(s)
    job = attempts.hand_back(s, attempt)
    assert (job.state, job.worker_id, job.heartbeat_at, job.stage, job.progress_step, job.progress_total,
            job.output_text, job.handed_back) == ("QUEUED", None, None, None, 0, 0, None, 1)


def test_a_hand_back_with_a_cancel_pending_ends_the_job_but_not_for_a_fenced_attempt(s):
    old = cancelling(s)
    go_stale(s, old.job_id)
    s.execute(update(Job).where(Job.id == old.job_id).values(state="RUNNING"))  # re-claimable, cancel forgotten
    s.commit()
    new = claim(s, old.job_id, "w2")
    attempts.record_answer(s, new, "a partial answer")
    repo.request_cancel(s, "acme", new.job_id)
    with pytest.raises(AttemptFenced):
        attempts.hand_back(s, old)
    assert state(s, old.job_id).state == "CANCELLING"
    job = attempts.hand_back(s, new)
    assert (job.state, job.output_text) == ("CANCELLED", None) and job.finished_at is not None


def test_a_cancel_acknowledged_by_the_worker_keeps_the_request_on_record(s):
    attempt = cancelling(s)
    assert attempts.check_attempt(s, attempt) is attempts.AttemptStatus.CANCEL_REQUESTED
    job = attempts.mark_cancelled(s, attempt)
    assert (job.state, job.cancel_requested, job.output_text) == ("CANCELLED", True, None)


def test_a_failure_keeps_its_timings(s):
    attempt = running(s, progress=False)
    job = attempts.fail_job(s, attempt, code="OUT_OF_MEMORY", message="too big", field="text_to_image.width",
                            timings={"denoise": 2.5})
    assert (job.error_code, job.error_message, job.error_field, job.timings) == \
        ("OUT_OF_MEMORY", "too big", "text_to_image.width", {"denoise": 2.5})


def test_a_fenced_attempt_is_told_why_from_the_database_not_its_sessions_memory(s, Session):
    """The attempt's job object sits in the worker's session; another worker's writes must still be seen."""
    attempt = running(s, progress=False)
    go_stale(s, attempt.job_id)
    with Session() as other:
        claim(other, attempt.job_id, "w2")
    with pytest.raises(AttemptFenced) as fenced:
        attempts.finish_job(s, attempt, output_keys={})
    assert (fenced.value.attempt, fenced.value.reason) == (attempt, "attempt 2 has claimed it since")
    assert str(fenced.value) == f"attempt 1 of job {attempt.job_id} is fenced off: attempt 2 has claimed it since"

    gone = running(s, progress=False)
    with Session() as other:
        other.execute(Job.__table__.delete().where(Job.id == gone.job_id))
        other.commit()
    with pytest.raises(AttemptFenced) as fenced:
        attempts.fail_job(s, gone, code="X", message="x")
    assert fenced.value.reason == "the job was deleted"


def test_a_finish_retried_after_its_commit_landed_elsewhere_is_recognised(s, Session):
    """The first finish committed, but its answer was lost with the connection: the worker's session still
    holds the job as RUNNING. The retry must read the row, see its own ending and not call itself fenced."""
    attempt = running(s, progress=False)
    keys = {"image": f"results/{attempt.job_id}/1/image.png"}
    with Session() as lost_answer:
        attempts.finish_job(lost_answer, attempt, output_keys=keys)
    assert attempts.finish_job(s, attempt, output_keys=keys).state == "SUCCEEDED"


def test_progress_renews_the_lease(s):
    attempt = running(s, progress=False)
    go_stale(s, attempt.job_id)
    assert attempts.record_progress(s, attempt, "denoise", 1, 8)
    assert attempts.reap_stale(s, heartbeat_timeout_s=TIMEOUT_S, max_attempts=3) == ([], [])


def test_a_running_job_without_any_heartbeat_is_stale(s):
    """A row written outside the workers (a restore, a hand edit) with no heartbeat at all is nobody's."""
    attempt = running(s, progress=False)
    s.execute(update(Job).where(Job.id == attempt.job_id).values(heartbeat_at=None))
    s.commit()
    assert attempts.reap_stale(s, heartbeat_timeout_s=TIMEOUT_S, max_attempts=3) == ([attempt.job_id], [])


def test_taking_over_a_stale_job_starts_clean_and_sees_the_row_not_the_sessions_memory(s, Session):
    """The same worker session claimed the job before; the job was re-queued meanwhile by another session."""
    first = running(s)  # the session holds the job as RUNNING, attempt 1
    go_stale(s, first.job_id)
    with Session() as reaper:
        assert attempts.reap_stale(reaper, heartbeat_timeout_s=TIMEOUT_S, max_attempts=3) == ([first.job_id], [])
    # Read as RUNNING with 1 failed attempt of 1, it would be dead-lettered; it is QUEUED, so it is claimed.
    second = claim(s, first.job_id, "w2", max_attempts=1)
    assert second is not None and second.number == 2
    job = state(s, first.job_id)
    assert (job.stage, job.progress_step, job.progress_total, job.output_text) == (None, 0, 0, None)


def test_a_redelivered_exhausted_job_says_how_many_attempts_it_had(s):
    attempt = running(s, progress=False)
    go_stale(s, attempt.job_id)
    s.execute(update(Job).where(Job.id == attempt.job_id).values(attempts=4, handed_back=1))
    s.commit()
    assert claim(s, attempt.job_id, "w2", max_attempts=3) is None
    assert state(s, attempt.job_id).error_message == "the worker stopped responding on each of 3 attempts; giving up"


def test_an_attempts_token_fences_only_its_own_job(s):
    """One worker thread runs job A, then job B: both are attempt 1 of the same worker id. A's late writes must
    not land on B."""
    a = running(s, progress=False)
    attempts.finish_job(s, a, output_keys={})
    b = claim(s, submit(s).id, a.worker_id)
    assert (b.number, b.worker_id) == (a.number, a.worker_id)
    assert not attempts.heartbeat(s, a)
    assert not attempts.record_progress(s, a, "denoise", 5, 8)
    assert attempts.check_attempt(s, a) is attempts.AttemptStatus.FENCED
    job = state(s, b.job_id)
    assert (job.state, job.progress_step) == ("RUNNING", 0)


def test_a_postgres_claim_locks_its_own_row_only(s, Session, db_url, monkeypatch):
    """Another job's claimer must not find that job locked by this claim (it would skip it as taken)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("row locks are Postgres-only")
    mine, other = submit(s), submit(s)
    seen_free = []
    real_shift = attempts.shift

    def probe_then_shift(session, *args, **values):
        with Session() as probe:
            seen_free.append(probe.scalar(select(Job.id).where(Job.id == other.id)
                                          .with_for_update(skip_locked=True)) == other.id)
            probe.rollback()
        return real_shift(session, *args, **values)

    monkeypatch.setattr(attempts, "shift", probe_then_shift)
    assert claim(s, mine.id) is not None
    assert seen_free == [True]


def test_taking_over_a_stale_running_job_clears_what_its_last_attempt_left(s):
    first = running(s)
    go_stale(s, first.job_id)
    second = claim(s, first.job_id, "w2")
    job = state(s, second.job_id)
    assert (job.attempts, job.worker_id, job.stage, job.progress_step, job.progress_total, job.output_text) == \
        (2, "w2", None, 0, 0, None)
