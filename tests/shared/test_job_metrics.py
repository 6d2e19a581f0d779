"""llada_jobs_finished_total counts a job where it ends, once its transaction commits: a worker's end, a queued
job's cancel, the reaper's dead letter; a rolled-back end counts nothing, and an expiry is no second end."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from shared import attempts
from shared import repository as repo
from shared.db import Job
from shared.db.types import utcnow
from shared.job_metrics import JOBS_FINISHED
from shared.jobs import JobState
from shared.transitions import shift


def finished(kind: str, state: str) -> float:
    return JOBS_FINISHED.labels(kind, state)._value.get()


def submit(s, kind="EDIT"):
    return repo.submit_job(s, tenant="counted", request_id=None, kind=kind, params={"instruction": "x"},
                           input_keys={}, priority=0).job


def test_each_way_a_job_ends_counts_once_at_commit(s):
    before = {state: finished("EDIT", state) for state in ("SUCCEEDED", "FAILED", "CANCELLED")}
    done = attempts.claim_job(s, submit(s).id, "w", heartbeat_timeout_s=60)
    attempts.finish_job(s, done, output_keys={})
    queued = submit(s)
    repo.request_cancel(s, "counted", queued.id)  # the gateway's cancel of a queued job
    lost = attempts.claim_job(s, submit(s).id, "w", heartbeat_timeout_s=60)
    s.execute(update(Job).where(Job.id == lost.job_id).values(heartbeat_at=utcnow() - timedelta(seconds=120)))
    s.commit()
    attempts.reap_stale(s, heartbeat_timeout_s=60, max_attempts=1)  # its last attempt: a dead letter
    after = {state: finished("EDIT", state) for state in before}
    assert {state: after[state] - before[state] for state in before} == {"SUCCEEDED": 1, "FAILED": 1, "CANCELLED": 1}

    expired_before = finished("EDIT", "EXPIRED")
    shift(s, [JobState.SUCCEEDED], JobState.EXPIRED, Job.id == done.job_id, output_keys={})
    s.commit()
    assert finished("EDIT", "EXPIRED") == expired_before  # results purged: not another end


def test_a_rolled_back_end_counts_nothing(s):
    attempt = attempts.claim_job(s, submit(s).id, "w", heartbeat_timeout_s=60)
    before = finished("EDIT", "FAILED")
    assert shift(s, [JobState.RUNNING], JobState.FAILED, Job.id == attempt.job_id, error_code="X")
    s.rollback()
    assert finished("EDIT", "FAILED") == before
    assert repo.load_job(s, attempt.job_id).state == "RUNNING"
