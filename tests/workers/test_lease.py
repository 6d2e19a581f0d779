"""The running attempt's lease (workers.lease) on its own: heartbeats renew it while the job runs, a refused
heartbeat or a cancel check that finds the job taken loses it (and says why), a drain that ran out hands the job
back, and its log fields name the job, attempt, tenant, worker and trace."""

from __future__ import annotations

import logging
import threading
import time
import types
from datetime import timedelta

from sqlalchemy import update

from shared import attempts
from shared.db import Job
from shared.jobs import JobKind
from workers import lease as lease_module
from workers.lease import Lease
from workers.lifecycle import Lifecycle
from tests.deadlines import deadline_s

DEADLINE_S = deadline_s(10)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def claimed(harness, worker="w1"):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a fox", width=256, height=256)
    harness.ctx.db(lambda s: (s.execute(update(Job).where(Job.id == job_id).values(trace_context=TRACEPARENT)),
                              s.commit()))
    return harness.ctx.db(attempts.claim_job, job_id, worker, heartbeat_timeout_s=60)


def heartbeat_at(harness, job_id):
    return harness.job(job_id).heartbeat_at


def wait_until(predicate, what):
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_heartbeats_renew_the_lease_while_the_attempt_runs(harness):
    attempt = claimed(harness)
    first = heartbeat_at(harness, attempt.job_id)
    with Lease(harness.ctx, attempt) as lease:
        wait_until(lambda: heartbeat_at(harness, attempt.job_id) > first, "no heartbeat renewed the lease")
        assert not lease.fenced.is_set()
    assert lease._thread.name == f"heartbeat-{attempt.job_id}" and not lease._thread.is_alive()


def test_an_ending_attempt_does_not_wait_longer_than_its_bound_for_a_stuck_heartbeat(harness, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def stuck_heartbeat(s, attempt):  # a database call that does not come back
        entered.set()
        release.wait(DEADLINE_S)
        return True
    monkeypatch.setattr(lease_module, "attempts", types.SimpleNamespace(heartbeat=stuck_heartbeat))
    monkeypatch.setattr(lease_module, "HEARTBEAT_JOIN_S", 0.05)
    attempt = claimed(harness)
    try:
        with Lease(harness.ctx, attempt) as lease:
            assert entered.wait(DEADLINE_S)
        assert lease._thread.is_alive()  # left behind, a daemon: the attempt went on without it
    finally:
        release.set()
    lease._thread.join(DEADLINE_S)
    assert not lease._thread.is_alive()


def test_a_refused_heartbeat_loses_the_lease_and_says_why(harness, caplog):
    caplog.set_level(logging.INFO, logger="llada.worker")
    attempt = claimed(harness)
    stale = heartbeat_at(harness, attempt.job_id) - timedelta(seconds=120)
    harness.ctx.db(lambda s: (s.execute(update(Job).where(Job.id == attempt.job_id).values(heartbeat_at=stale)),
                              s.commit()))
    assert harness.ctx.db(attempts.claim_job, attempt.job_id, "w2", heartbeat_timeout_s=60) is not None
    with Lease(harness.ctx, attempt) as lease:
        assert lease.fenced.wait(DEADLINE_S)
        assert lease.should_cancel()
    [record] = [r for r in caplog.records if r.getMessage() == "attempt fenced off; stopping it"]
    assert record.reason == "heartbeat refused"


def test_a_cancel_check_that_finds_the_job_taken_stops_the_attempt(harness, caplog):
    caplog.set_level(logging.INFO, logger="llada.worker")
    attempt = claimed(harness)
    lease = Lease(harness.ctx, attempt)  # not entered: no heartbeat thread, only the check
    assert lease.should_cancel() is False
    harness.ctx.db(lambda s: (s.execute(update(Job).where(Job.id == attempt.job_id).values(attempts=2)), s.commit()))
    assert lease.should_cancel() is True and lease.fenced.is_set()
    [record] = [r for r in caplog.records if r.getMessage() == "attempt fenced off; stopping it"]
    assert record.reason == "cancel check found the job taken"
    lease.lose("again")  # lost once: said once
    assert len([r for r in caplog.records if r.getMessage() == "attempt fenced off; stopping it"]) == 1


def test_a_drain_that_ran_out_hands_the_job_back_at_the_next_check(harness):
    harness.ctx.lifecycle = Lifecycle()  # this test's own: the process's is every other test's too
    attempt = claimed(harness)
    lease = Lease(harness.ctx, attempt)
    assert lease.handing_back is None and lease.should_cancel() is False
    harness.ctx.lifecycle.begin_drain(0)
    assert lease.should_cancel() is True
    assert lease.handing_back == "the worker is shutting down and its drain timeout ran out"
    assert lease.should_cancel() is True and not lease.fenced.is_set()


def test_log_fields_name_the_job_attempt_tenant_worker_and_trace(harness):
    attempt = claimed(harness)
    assert Lease(harness.ctx, attempt).log_fields(step=3) == {
        "job_id": attempt.job_id, "attempt": 1, "tenant": "t1", "worker_id": "w1",
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "step": 3}
