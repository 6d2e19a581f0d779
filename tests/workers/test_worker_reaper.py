"""The reaper in-process: stale heartbeats re-queued and re-sent, dead letters, lost messages, retention."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tests.workers.worker_harness import png_bytes
from shared import attempts
from shared.db import Job, make_engine, session_factory
from shared.health_file import judge, read_health_file
from shared.jobs import JobKind
from workers.reaper import MISSED_PASSES, SLOW_PASS_ALLOWANCE_S, Reaper, run_forever
from tests.deadlines import deadline_s


class EnqueueRecorderDouble:
    """Stands in for shared.queue.enqueue_run_job: records what the reaper would send."""

    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def __call__(self, job_id: str, priority: int) -> None:
        self.sent.append((job_id, priority))


def age(harness, job_id: str, column: str, seconds: float) -> None:
    """Move one of the job's times `seconds` into the past: the state a stalled worker or an old job leaves,
    without waiting for it."""
    with harness.ctx.sessions() as s:
        current = getattr(s.get(Job, job_id), column)
        s.execute(update(Job).where(Job.id == job_id).values({column: current - timedelta(seconds=seconds)}))
        s.commit()


class FakeMonotonicClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_reaper(harness, **overrides):
    settings = harness.ctx.settings.model_copy(update=overrides)
    enqueue = EnqueueRecorderDouble()
    return Reaper(settings, harness.ctx.sessions, harness.ctx.store, harness.ctx.events, enqueue), enqueue


def test_stale_job_is_requeued_and_sent_again_then_dead_lettered(harness):
    reaper, enqueue = make_reaper(harness, heartbeat_timeout_s=60, max_attempts=2)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    harness.ctx.db(attempts.claim_job, job_id, "dead-worker-1", heartbeat_timeout_s=60)
    age(harness, job_id, "heartbeat_at", 50)
    assert reaper.run_once().requeued == []  # ten seconds left on the lease: still the worker's
    age(harness, job_id, "heartbeat_at", 11)

    report = reaper.run_once()

    assert report.requeued == [job_id] and enqueue.sent == [(job_id, 0)]
    job = harness.job(job_id)
    assert (job.state, job.attempts, job.worker_id) == ("QUEUED", 1, None)

    harness.ctx.db(attempts.claim_job, job_id, "dead-worker-2", heartbeat_timeout_s=60)
    age(harness, job_id, "heartbeat_at", 61)
    report = reaper.run_once()

    assert report.dead == [job_id] and report.requeued == []
    job = harness.job(job_id)
    assert (job.state, job.attempts, job.error_code) == ("FAILED", 2, "WORKER_LOST")


class EventRecorderDouble:
    """Stands in for the event bus: records what the reaper tells watchers."""

    def __init__(self):
        self.published: list[tuple[str, dict]] = []

    def publish(self, job_id: str, event: dict) -> None:
        self.published.append((job_id, event))


def test_watchers_are_told_of_each_job_the_reaper_moves(harness):
    events = EventRecorderDouble()
    reaper = Reaper(harness.ctx.settings.model_copy(update={"heartbeat_timeout_s": 60, "max_attempts": 1,
                                                            "retention_s": 3600}),
                    harness.ctx.sessions, harness.ctx.store, events, EnqueueRecorderDouble())
    requeued, dead = (harness.submit(JobKind.TEXT_TO_IMAGE, prompt=p, width=256, height=256) for p in ("a", "b"))
    for job_id in (requeued, dead):
        harness.ctx.db(attempts.claim_job, job_id, "gone-worker", heartbeat_timeout_s=60)
        age(harness, job_id, "heartbeat_at", 61)
    harness.ctx.db(lambda s: (s.execute(update(Job).where(Job.id == requeued).values(handed_back=1)), s.commit()))
    expired = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="c", width=256, height=256)
    assert harness.runner().run(expired) == "SUCCEEDED"
    age(harness, expired, "finished_at", 3601)

    report = reaper.run_once()

    assert (report.requeued, report.dead, report.expired) == ([requeued], [dead], [expired])
    assert sorted(events.published) == sorted([(requeued, {"type": "state", "state": "QUEUED"}),
                                               (dead, {"type": "state", "state": "FAILED"}),
                                               (expired, {"type": "state", "state": "EXPIRED"})])


def test_running_job_with_fresh_heartbeat_is_left_alone(harness):
    reaper, enqueue = make_reaper(harness, heartbeat_timeout_s=30)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    harness.ctx.db(attempts.claim_job, job_id, "live-worker", heartbeat_timeout_s=30)

    report = reaper.run_once()

    assert report.requeued == report.dead == [] and enqueue.sent == []
    assert harness.job(job_id).state == "RUNNING"


def test_job_queued_too_long_is_resent_once_per_window(harness, monkeypatch):
    clock = FakeMonotonicClock()
    monkeypatch.setattr("workers.reaper.time.monotonic", clock)
    reaper, enqueue = make_reaper(harness, resend_queued_after_s=60)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)

    age(harness, job_id, "created_at", 50)
    assert reaper.run_once().resent == []  # young: its message is probably still on its way
    age(harness, job_id, "created_at", 11)
    assert reaper.run_once().resent == [job_id]
    clock.now += 59
    assert reaper.run_once().resent == []  # sent within the window: no flood of duplicates
    clock.now += 2
    assert reaper.run_once().resent == [job_id]
    assert enqueue.sent == [(job_id, 0), (job_id, 0)]


def test_finished_results_past_retention_expire_and_objects_are_removed(harness):
    reaper, _ = make_reaper(harness, retention_s=3600)
    old = harness.submit(JobKind.EDIT, instruction="make it blue", image=png_bytes())
    assert harness.runner().run(old) == "SUCCEEDED"
    fresh = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    assert harness.runner().run(fresh) == "SUCCEEDED"
    age(harness, old, "finished_at", 3601)
    age(harness, fresh, "finished_at", 3500)  # short of retention: kept

    report = reaper.run_once()

    assert report.expired == [old]
    job = harness.job(old)
    assert (job.state, job.output_keys) == ("EXPIRED", {})
    remaining = [p.relative_to(harness.ctx.store.root).as_posix()
                 for p in harness.ctx.store.root.rglob("*") if p.is_file()]
    assert remaining == [f"results/{fresh}/1/image.png"]
    assert harness.job(fresh).state == "SUCCEEDED"


def test_each_pass_is_recorded_for_the_health_check_and_a_failing_pass_makes_it_unhealthy(harness, tmp_path):
    """`llada-healthcheck reaper` reads the pass file (shared/health_file.py): fresh after each pass, 'failed'
    after a pass that could not reach the database, gone once the reaper stops."""
    pass_file = tmp_path / "run" / "reaper.pass"
    reaper, _ = make_reaper(harness)
    stop = threading.Event()
    thread = threading.Thread(target=run_forever, args=(reaper, 0.05, stop, pass_file))
    thread.start()
    try:
        wait_for(lambda: judge(read_health_file(pass_file))[0])
        record = read_health_file(pass_file)
        # A few intervals before it counts as stuck, plus room for one slow pass.
        assert record.facts["stale_after_s"] == pytest.approx(MISSED_PASSES * 0.05 + SLOW_PASS_ALLOWANCE_S)

        reaper.sessions = session_factory(make_engine(f"sqlite:///{tmp_path}/no-such-folder/jobs.db"))
        wait_for(lambda: not judge(read_health_file(pass_file))[0])
        healthy, why = judge(read_health_file(pass_file))
        assert read_health_file(pass_file).facts["error"] == \
            "last pass failed: OperationalError: (sqlite3.OperationalError) no such table: jobs"
        assert "last pass failed: OperationalError" in why
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and not pass_file.exists()


def wait_for(predicate, timeout: float = deadline_s(15)):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_settled_webhook_deliveries_past_retention_are_purged(harness):
    from shared.db.models import WebhookDelivery
    from shared.db.types import utcnow

    reaper, _ = make_reaper(harness, retention_s=3600)
    now = utcnow()

    def delivery(delivery_id, state, finished_ago_s):
        return WebhookDelivery(id=delivery_id, job_id="j", tenant="t", event="completed", url="https://h/x",
                               body="{}", delivery_state=state, tries=1, next_try_at=now,
                               finished_at=None if finished_ago_s is None else now - timedelta(seconds=finished_ago_s))

    with harness.ctx.sessions() as s:
        s.add_all([delivery("old", "delivered", 3601), delivery("young", "failed", 3500),
                   delivery("owed", "pending", None)])
        s.commit()
    assert reaper.run_once().purged_deliveries == 1
    with harness.ctx.sessions() as s:
        assert sorted(s.scalars(select(WebhookDelivery.id))) == ["owed", "young"]
