"""The runner's side of a drain and of a model that will not load (workers.lifecycle): a job past the drain
deadline is handed back at once and not counted, a job that finishes in time is untouched, a message taken
while draining is sent back unstarted, and a worker without its model hands its job back and stops."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

import pytest

from tests.workers.executor_doubles import ScriptedExecutorDouble
from tests.workers.worker_harness import make_harness
from shared import attempts
from shared.jobs import JobKind
from workers.executor import ModelUnavailable
from workers.lifecycle import EXIT_MODEL_UNAVAILABLE, Lifecycle


class EnqueueRecorderDouble:
    def __init__(self):
        self.sent: list[tuple[str, int]] = []

    def __call__(self, job_id: str, priority: int) -> None:
        self.sent.append((job_id, priority))


@pytest.fixture
def drained(tmp_path):
    harness, engine = make_harness(tmp_path, executor=ScriptedExecutorDouble(steps=400, step_s=0.01))
    harness.ctx.lifecycle = Lifecycle()
    harness.ctx.enqueue = EnqueueRecorderDouble()
    yield harness
    engine.dispose()


def events_of(harness, job_id):
    conn = sqlite3.connect(harness.ctx.events.path)
    rows = conn.execute("SELECT payload FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    conn.close()
    return [json.loads(row[0]) for row in rows]


def run_in_thread(harness, job_id):
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(harness.runner().run(job_id)))
    thread.start()
    return thread, outcome


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_a_job_past_the_drain_deadline_is_handed_back_at_once_and_not_counted(drained):
    job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="long", width=256, height=256)
    thread, outcome = run_in_thread(drained, job_id)
    wait_for(lambda: drained.executor.steps_run >= 2)

    drained.ctx.lifecycle.begin_drain(0.2)
    thread.join(15)

    assert outcome == ["handed back"] and drained.executor.steps_run < 400
    job = drained.job(job_id)
    assert (job.state, job.attempts, job.handed_back, job.worker_id) == ("QUEUED", 1, 1, None)
    assert drained.ctx.enqueue.sent == [(job_id, 0)]  # re-sent now, not after a lease runs out
    assert events_of(drained, job_id)[-1] == {
        "type": "state", "state": "QUEUED", "handed_back": True,
        "reason": "the worker is shutting down and its drain timeout ran out"}
    assert [obj.key for obj in drained.ctx.store.list_after("results/")] == []


def test_a_job_that_finishes_within_the_drain_is_not_touched(drained):
    drained.executor.steps = 20
    job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="short", width=256, height=256)
    thread, outcome = run_in_thread(drained, job_id)
    wait_for(lambda: drained.executor.steps_run >= 1)

    drained.ctx.lifecycle.begin_drain(30)
    thread.join(15)

    assert outcome == ["SUCCEEDED"]
    assert (drained.job(job_id).attempts, drained.job(job_id).handed_back) == (1, 0)
    assert drained.ctx.enqueue.sent == []


def test_a_second_sigterm_cuts_the_drain_short(drained):
    job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="long", width=256, height=256)
    thread, outcome = run_in_thread(drained, job_id)
    wait_for(lambda: drained.executor.steps_run >= 2)

    drained.ctx.lifecycle.begin_drain(3600)
    drained.ctx.lifecycle.begin_drain(3600)
    thread.join(15)

    assert outcome == ["handed back"] and drained.job(job_id).state == "QUEUED"


def test_a_message_taken_while_draining_is_sent_back_unstarted(drained):
    job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="late", width=256, height=256)
    drained.ctx.lifecycle.begin_drain(3600)

    assert drained.runner().run(job_id) == "sent back"

    job = drained.job(job_id)
    assert (job.state, job.attempts) == ("QUEUED", 0) and drained.executor.steps_run == 0
    assert drained.ctx.enqueue.sent == [(job_id, 0)]


class UnloadableModelExecutorDouble:
    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        raise ModelUnavailable("the model at /models/x could not be loaded: FileNotFoundError: config.json")


def test_a_worker_that_cannot_load_its_model_hands_the_job_back_and_stops(drained):
    drained.ctx.executor = UnloadableModelExecutorDouble()
    job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)

    assert drained.runner().run(job_id) == "handed back"

    job = drained.job(job_id)
    assert (job.state, job.error_code, job.handed_back) == ("QUEUED", None, 1)  # not FAILED: not the job's fault
    assert drained.ctx.enqueue.sent == [(job_id, 0)]
    assert drained.ctx.lifecycle.exit_code() == EXIT_MODEL_UNAVAILABLE
    other = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="next", width=256, height=256)
    assert drained.runner().run(other) == "sent back"  # it takes no further job
    assert drained.ctx.db(attempts.claim_job, job_id, "w2", heartbeat_timeout_s=60).number == 2


class TakenOverThenUnloadableExecutorDouble:
    """While it fails to load, the job is reaped and claimed by another worker (its lease had run out unseen)."""

    def __init__(self, harness):
        self.harness = harness

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        self.harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)
        self.harness.ctx.db(attempts.claim_job, self.harness.running, "w2", heartbeat_timeout_s=60)
        raise ModelUnavailable("the model at /models/x could not be loaded: FileNotFoundError: config.json")


def test_a_hand_back_of_a_job_taken_over_meanwhile_leaves_it_to_its_owner_and_says_why(drained, caplog):
    caplog.set_level(logging.INFO, logger="llada.worker")
    drained.ctx.executor = TakenOverThenUnloadableExecutorDouble(drained)
    drained.running = job_id = drained.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)

    assert drained.runner().run(job_id) == "lost"

    job = drained.job(job_id)
    assert (job.state, job.attempts, job.worker_id, job.handed_back) == ("RUNNING", 2, "w2", 0)
    assert drained.ctx.enqueue.sent == []  # the new owner runs it: no second message
    [lost] = [r for r in caplog.records if r.getMessage().startswith("attempt fenced off; its outcome is left")]
    assert lost.reason == "attempt 2 has claimed it since"


def test_a_worker_is_ready_only_with_its_model_loaded_and_neither_draining_nor_failed():
    """What the readiness file reports (workers/readiness.py): the process tests see it from outside."""
    life = Lifecycle()
    assert not life.ready() and not life.draining() and life.exit_code() == 0
    life.model_loaded()
    assert life.ready()
    life.begin_drain(3600)
    assert life.draining() and not life.drain_expired() and not life.ready()

    failed = Lifecycle()
    failed.model_loaded()
    failed.model_failed()
    assert failed.exit_code() == EXIT_MODEL_UNAVAILABLE and not failed.ready()


def test_the_first_sigterm_sets_the_drain_deadline_and_the_second_moves_it_to_now():
    life = Lifecycle()
    life.begin_drain(3600)
    assert life.draining() and not life.drain_expired()
    life.begin_drain(3600)
    assert life.drain_expired()
