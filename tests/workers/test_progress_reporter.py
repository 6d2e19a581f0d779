"""The executor's progress callback (workers.lease.ProgressReporter): throttled to one write per
PROGRESS_MIN_INTERVAL_S, except that a stage's first step and its last always land; each write that lands is
published; nothing is written once the attempt is fenced off. And the answer callback's fenced writes.
Timed by a clock the test moves, not by sleeping."""

from __future__ import annotations

import dataclasses
import logging
import types

import pytest

from tests.workers.test_lease import claimed
from shared import attempts
from workers import lease as lease_module
from workers.lease import PROGRESS_MIN_INTERVAL_S, AnswerReporter, Lease, ProgressReporter


class EventRecorderDouble:
    def __init__(self):
        self.events: list[tuple[str, dict]] = []

    def publish(self, job_id, event):
        self.events.append((job_id, event))


class ManualClock:
    def __init__(self):
        self.now = 0.0  # so that "the interval after" is exactly PROGRESS_MIN_INTERVAL_S in floating point

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def reporter(harness, monkeypatch):
    """A ProgressReporter for a claimed attempt, the events it publishes, and the clock it reads."""
    clock = ManualClock()
    monkeypatch.setattr(lease_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    bus = EventRecorderDouble()
    harness.ctx = dataclasses.replace(harness.ctx, events=bus)
    attempt = claimed(harness)
    lease = Lease(harness.ctx, attempt)
    return types.SimpleNamespace(report=ProgressReporter(harness.ctx, lease), lease=lease, clock=clock,
                                 published=lambda: [event for _, event in bus.events],
                                 stored=lambda: _stored_progress(harness, attempt.job_id))


def _stored_progress(harness, job_id):
    job = harness.job(job_id)
    return job.stage, job.progress_step, job.progress_total


def progress(stage, step, total):
    return {"type": "progress", "stage": stage, "step": step, "total": total}


def test_steps_closer_than_the_interval_are_skipped_and_one_at_the_interval_lands(reporter):
    written_at = reporter.clock.now
    reporter.report("denoise", 1, 10)
    reporter.clock.now = written_at + PROGRESS_MIN_INTERVAL_S - 0.001
    reporter.report("denoise", 2, 10)
    assert reporter.stored() == ("denoise", 1, 10)
    reporter.clock.now = written_at + PROGRESS_MIN_INTERVAL_S  # the interval after the last write
    reporter.report("denoise", 3, 10)

    assert reporter.stored() == ("denoise", 3, 10)
    assert reporter.published() == [progress("denoise", 1, 10), progress("denoise", 3, 10)]


def test_a_stages_last_step_and_a_new_stage_land_within_the_interval(reporter):
    reporter.report("denoise", 1, 10)
    reporter.report("denoise", 9, 10)   # skipped: too soon
    reporter.report("denoise", 10, 10)  # the last step
    reporter.report("decode", 1, 3)     # a new stage
    reporter.report("decode", 2, 3)     # skipped
    reporter.report("decode", 4, 3)     # past the total counts as the end too

    assert reporter.published() == [progress("denoise", 1, 10), progress("denoise", 10, 10),
                                     progress("decode", 1, 3), progress("decode", 4, 3)]
    assert reporter.stored() == ("decode", 4, 3)


def test_each_model_stage_is_reported_as_the_services_stage(reporter):
    for stage in ("tokenize", "think", "denoise", "decode"):
        reporter.report(stage, 1, 2)
    reporter.report("sample", 1, 2)  # a stage the service has no name for counts as denoising

    assert [event["stage"] for event in reporter.published()] == ["tokenize", "think", "denoise", "decode",
                                                                  "denoise"]


def test_after_a_fence_nothing_is_written_or_published(reporter):
    reporter.report("denoise", 1, 10)
    reporter.lease.fenced.set()
    reporter.report("decode", 1, 3)

    assert reporter.stored() == ("denoise", 1, 10)
    assert reporter.published() == [progress("denoise", 1, 10)]


def test_a_refused_write_loses_the_lease_says_why_and_publishes_nothing(reporter, harness, caplog):
    harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)  # the job is no longer ours

    with caplog.at_level(logging.INFO, logger="llada.worker"):
        reporter.report("denoise", 1, 10)

    assert reporter.lease.fenced.is_set()
    assert reporter.published() == []
    assert [r.reason for r in caplog.records if r.getMessage() == "attempt fenced off; stopping it"] == [
        "progress write refused"]


def test_a_refused_answer_loses_the_lease_and_a_fenced_one_is_not_written(reporter, harness, caplog):
    answer = AnswerReporter(harness.ctx, reporter.lease)
    answer("a cat")
    assert reporter.published() == [{"type": "answer", "chars": 5}]
    harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)

    with caplog.at_level(logging.INFO, logger="llada.worker"):
        answer("a cat on a mat")
        answer("a cat on a mat, asleep")  # fenced now: not even tried

    assert reporter.lease.fenced.is_set() and len(reporter.published()) == 1
    assert [r.reason for r in caplog.records if r.getMessage() == "attempt fenced off; stopping it"] == [
        "answer write refused"]
