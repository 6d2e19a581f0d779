"""run_job in-process: success, duplicate deliveries, cancellation, failures, losing the job to the reaper."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time

from PIL import Image

from tests.workers.executor_doubles import DRAWN_SEED
from tests.workers.worker_harness import png_bytes
from shared import attempts
from shared import repository as repo
from shared.jobs import JobKind, JobState
from tests.deadlines import deadline_s


def published(harness, job_id: str) -> list[dict]:
    conn = sqlite3.connect(harness.ctx.events.path)
    rows = conn.execute("SELECT payload FROM events WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
    conn.close()
    return [json.loads(row[0]) for row in rows]


def stored_objects(harness) -> list[str]:
    root = harness.ctx.store.root
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def wait_for(predicate, timeout: float = deadline_s(10)):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_text_to_image_succeeds_with_outputs_timings_and_events(harness):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a red fox", width=256, height=256)

    assert harness.runner().run(job_id) == "SUCCEEDED"

    job = harness.job(job_id)
    assert job.state == JobState.SUCCEEDED.value
    assert job.attempts == 1
    assert job.output_keys == {"image": f"results/{job_id}/1/image.png"}  # the attempt's own key
    image = Image.open(harness.ctx.store.root / job.output_keys["image"])
    assert image.format == "PNG"
    assert job.timings["denoise"] > 0 and job.timings["total"] > 0
    assert (job.stage, job.progress_step, job.progress_total) == ("denoise", 5, 5)
    assert job.finished_at is not None and job.error_code is None
    assert job.result_seed == DRAWN_SEED  # submitted without a seed: the drawn one is kept for replay
    events = published(harness, job_id)
    assert events[0] == {"type": "state", "state": "RUNNING", "attempt": 1}
    assert {"type": "progress", "stage": "denoise", "step": 5, "total": 5} in events
    assert events[-1] == {"type": "state", "state": "SUCCEEDED"}


def test_the_requested_seed_is_recorded_with_the_result(harness):
    job_id = harness.submit(JobKind.EDIT, instruction="night", seed=11, image=png_bytes())

    assert harness.runner().run(job_id) == "SUCCEEDED"

    assert harness.job(job_id).result_seed == 11


def test_understanding_answer_is_stored_as_text(harness):
    job_id = harness.submit(JobKind.UNDERSTAND, question="what is this?", image=png_bytes())

    assert harness.runner().run(job_id) == "SUCCEEDED"

    job = harness.job(job_id)
    assert job.output_text == "an answer to: what is this?"
    assert job.output_keys == {}


class GrowingAnswerExecutorDouble:
    """Tells an understanding answer in three settled pieces, noting what the job showed after each."""

    def __init__(self, harness):
        self.harness, self.shown = harness, []

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        from workers.executor import JobOutput

        for text in ("a red", "a red circle", "a red circle at the top"):
            answer(text)
            self.shown.append(self.harness.job(self.job_id).output_text)
        return JobOutput(text="a red circle at the top left")


def test_an_understanding_answer_grows_in_the_job_as_it_settles(harness):
    double = harness.ctx.executor = GrowingAnswerExecutorDouble(harness)
    job_id = double.job_id = harness.submit(JobKind.UNDERSTAND, question="where?", image=png_bytes())

    assert harness.runner().run(job_id) == "SUCCEEDED"

    assert double.shown == ["a red", "a red circle", "a red circle at the top"]
    assert harness.job(job_id).output_text == "a red circle at the top left"
    assert [e["chars"] for e in published(harness, job_id) if e["type"] == "answer"] == [5, 12, 23]


def test_duplicate_delivery_of_a_finished_job_is_a_no_op(harness):
    job_id = harness.submit(JobKind.EDIT, instruction="make it blue", image=png_bytes())
    assert harness.runner().run(job_id) == "SUCCEEDED"
    before = harness.job(job_id)
    objects = stored_objects(harness)
    steps = harness.executor.steps_run

    assert harness.runner().run(job_id) == "skipped"

    after = harness.job(job_id)
    assert (after.state, after.attempts, after.finished_at) == (before.state, 1, before.finished_at)
    assert stored_objects(harness) == objects
    assert harness.executor.steps_run == steps


def test_duplicate_delivery_of_a_running_job_is_a_no_op(harness):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    harness.ctx.db(attempts.claim_job, job_id, "other-worker", heartbeat_timeout_s=60)

    assert harness.runner().run(job_id) == "skipped"

    job = harness.job(job_id)
    assert (job.state, job.worker_id, job.attempts) == ("RUNNING", "other-worker", 1)
    assert harness.executor.steps_run == 0


def test_cancel_while_queued_never_runs(harness):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    harness.ctx.db(repo.request_cancel, "t1", job_id)

    assert harness.runner().run(job_id) == "skipped"

    job = harness.job(job_id)
    assert (job.state, job.attempts) == ("CANCELLED", 0)
    assert harness.executor.steps_run == 0 and stored_objects(harness) == []


def test_cancel_while_running_stops_within_one_step(harness):
    harness.executor.steps, harness.executor.step_s = 200, 0.02
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(harness.runner().run(job_id)))
    thread.start()
    wait_for(lambda: harness.executor.steps_run >= 2)

    harness.ctx.db(repo.request_cancel, "t1", job_id)
    steps_at_cancel = harness.executor.steps_run
    thread.join(10)

    assert outcome == ["CANCELLED"]
    assert harness.executor.steps_run <= steps_at_cancel + 1
    job = harness.job(job_id)
    assert job.state == "CANCELLED" and job.output_keys in ({}, None)
    assert [p for p in stored_objects(harness) if p.startswith("results/")] == []


def test_run_time_input_error_fails_naming_the_field(harness):
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fail-input please", width=256, height=256)

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    assert (job.error_code, job.error_field) == ("INVALID_ARGUMENT", "text_to_image.width")
    assert "too wide" in job.error_message


def test_out_of_memory_and_model_errors_fail_with_a_code(harness, caplog):
    oom = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="oom", width=256, height=256)
    crash = harness.submit(JobKind.UNDERSTAND, question="crash", image=png_bytes())

    with caplog.at_level(logging.INFO, logger="llada.worker"):
        assert harness.runner().run(oom) == "FAILED"
        assert harness.runner().run(crash) == "FAILED"

    # Only the model's own breakage is an error for the operator, with its traceback; running out of memory
    # is the job's size, told to its user.
    [logged] = [r for r in caplog.records if r.getMessage() == "job failed"]
    assert (logged.levelname, logged.job_id, logged.exc_info[0]) == ("ERROR", crash, RuntimeError)

    assert harness.job(oom).error_code == "RESOURCE_EXHAUSTED"
    assert "out of memory" in harness.job(oom).error_message
    assert harness.job(crash).error_code == "INTERNAL"
    assert "the model broke" in harness.job(crash).error_message


def test_missing_input_object_fails_the_job(harness):
    job_id = harness.submit(JobKind.EDIT, instruction="make it blue", image=png_bytes())
    harness.ctx.store.delete_prefix(f"inputs/{job_id}/")

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    assert (job.error_code, job.error_field) == ("INPUT_MISSING", "edit.image")
    assert harness.executor.steps_run == 0


def test_a_run_whose_job_was_reaped_stops_and_writes_nothing(harness):
    harness.executor.steps, harness.executor.step_s = 200, 0.02
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(harness.runner().run(job_id)))
    thread.start()
    wait_for(lambda: harness.executor.steps_run >= 1)

    # As if its heartbeat had gone stale: the reaper hands the job back to the queue.
    requeued, _ = harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)
    thread.join(10)

    assert requeued == [job_id]
    assert outcome == ["lost"]
    job = harness.job(job_id)
    assert (job.state, job.attempts) == ("QUEUED", 1)
    assert [p for p in stored_objects(harness) if p.startswith("results/")] == []


class UnreachableStoreExecutorDouble:
    """Stands in for the executor when a backend drops away mid-job (an infrastructure error)."""

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        raise ConnectionError("object store unreachable")


def test_infrastructure_error_leaves_the_job_for_the_reaper_instead_of_failing_it(harness):
    harness.ctx.executor = UnreachableStoreExecutorDouble()
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="a cat", width=256, height=256)

    try:
        harness.runner().run(job_id)
    except ConnectionError:
        pass
    else:
        raise AssertionError("the error should reach Celery")

    job = harness.job(job_id)
    assert (job.state, job.attempts, job.error_code) == ("RUNNING", 1, None)
    requeued, _ = harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)
    assert requeued == [job_id]  # the next attempt gets its chance
