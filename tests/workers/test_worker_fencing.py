"""A worker's writes are valid only for the attempt that claimed the job (ARCHITECTURE §3): a paused attempt
that wakes up after another took over, an upload in flight while the job moved on, a job cancelled away or
deleted while running — and a database outage, which is not a reason to lose an attempt."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError, ProgrammingError

from tests.workers.executor_doubles import PausingExecutorDouble, ScriptedExecutorDouble, png_seed
from tests.workers.worker_harness import make_harness
from shared import attempts
from shared import repository as repo
from shared.db import Job
from shared.jobs import JobKind
from shared.objectstore import LocalObjectStore
from workers.reaper import Reaper

# A frozen process sends no heartbeats: with beats 30 s apart, a paused attempt stays silent for the test.
SILENT = dict(heartbeat_interval_s=30.0, heartbeat_timeout_s=61.0)
WAIT_S = 15.0


class PausingStoreDouble(LocalObjectStore):
    """Its first put under results/ freezes mid-upload until `release` is set, then lands (a worker frozen
    with its put in flight); with `deletes_fail` set, deletes raise as an unreachable store would."""

    def __init__(self, root):
        super().__init__(root)
        self.paused = threading.Event()
        self.release = threading.Event()
        self.deletes_fail = False
        self._first = True

    def put(self, key, data, content_type="application/octet-stream"):
        if key.startswith("results/") and self._first:
            self._first = False
            self.paused.set()
            assert self.release.wait(30), "the test never released the paused upload"
        super().put(key, data, content_type)

    def delete(self, key):
        if self.deletes_fail:
            raise ConnectionError("object store unreachable")
        super().delete(key)


class FlakySessionsDouble:
    """Stands in for the worker's sessionmaker. While `down` is set, no session can connect (a database
    outage); `fail_job_thread_once` makes the job thread's next session raise the given error."""

    def __init__(self, sessions):
        self.sessions = sessions
        self.down = threading.Event()
        self.refused = 0
        self._once: Exception | None = None

    def fail_job_thread_once(self, err: Exception) -> None:
        self._once = err

    def __call__(self):
        if self._once is not None and not threading.current_thread().name.startswith("heartbeat-"):
            err, self._once = self._once, None
            raise err
        if self.down.is_set():
            self.refused += 1
            raise OperationalError("UPDATE jobs SET heartbeat_at=%(x)s", {}, ConnectionRefusedError("refused"))
        return self.sessions()


@pytest.fixture
def make(tmp_path):
    engines = []

    def make_one(**kwargs):
        harness, engine = make_harness(tmp_path, **kwargs)
        engines.append(engine)
        return harness
    yield make_one
    for engine in engines:
        engine.dispose()


def start(harness, job_id):
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(harness.runner().run(job_id)))
    thread.start()
    return thread, outcome


def wait_for(predicate, what: str):
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {WAIT_S} s")
        time.sleep(0.01)


def results(harness) -> list[str]:
    return [obj.key for obj in harness.ctx.store.list_after("results/")]


def reap_now(harness):
    """The reaper's pass once the paused attempt's lease has run out."""
    return harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)


def lost_record(caplog):
    """The log line of the fenced-off attempt, which says why and how many of its objects it removed."""
    [record] = [r for r in caplog.records if r.getMessage().startswith("attempt fenced off; its outcome is left")]
    return record


def test_a_paused_attempt_that_wakes_after_a_takeover_writes_nothing(make, caplog):
    """Attempt 1 freezes with its image made; the job is re-queued and attempt 2 finishes it; attempt 1
    wakes up and goes on to upload and finish. Users must get attempt 2's image, under its own key."""
    caplog.set_level(logging.INFO, logger="llada.worker")
    harness = make(executor=PausingExecutorDouble(), **SILENT)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    zombie, outcome = start(harness, job_id)
    assert harness.executor.paused.wait(WAIT_S)

    assert reap_now(harness) == ([job_id], [])
    assert harness.runner().run(job_id) == "SUCCEEDED"
    winner = harness.job(job_id)
    harness.executor.resume.set()
    zombie.join(WAIT_S)

    assert outcome == ["lost"]
    job = harness.job(job_id)
    assert (job.state, job.attempts, job.result_seed) == ("SUCCEEDED", 2, 2)
    assert job.output_keys == {"image": f"results/{job_id}/2/image.png"}
    assert (job.finished_at, job.timings) == (winner.finished_at, winner.timings)
    assert png_seed(harness.ctx.store.get(job.output_keys["image"])) == 2  # the bytes match the row's seed
    assert results(harness) == [f"results/{job_id}/2/image.png"]  # the zombie removed what it wrote
    record = lost_record(caplog)
    assert (record.reason, record.removed, record.attempt) == ("attempt 2 has claimed it since", 1, 1)


def test_an_upload_in_flight_when_the_job_moved_on_never_replaces_the_winners(make, tmp_path):
    store = PausingStoreDouble(tmp_path / "objects")
    executor = PausingExecutorDouble()
    executor.resume.set()  # no pause in the executor: the upload is what hangs
    harness = make(executor=executor, store=store, **SILENT)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    zombie, outcome = start(harness, job_id)
    assert store.paused.wait(WAIT_S)

    reap_now(harness)
    assert harness.runner().run(job_id) == "SUCCEEDED"
    store.deletes_fail = True  # the late attempt cannot even clean up after itself
    store.release.set()
    zombie.join(WAIT_S)

    assert outcome == ["lost"]
    job = harness.job(job_id)
    assert (job.result_seed, job.output_keys) == (2, {"image": f"results/{job_id}/2/image.png"})
    assert png_seed(store.get(job.output_keys["image"])) == 2
    # The late put landed under attempt 1's key, which no row names: the reaper's sweep removes it.
    assert results(harness) == [f"results/{job_id}/1/image.png", f"results/{job_id}/2/image.png"]
    store.deletes_fail = False
    reaper = Reaper(harness.ctx.settings, harness.ctx.sessions, store, harness.ctx.events, lambda *a: None)
    assert reaper.run_once().swept == [f"results/{job_id}/1/image.png"]
    assert results(harness) == [f"results/{job_id}/2/image.png"]


def test_a_job_cancelled_while_its_upload_hangs_gets_no_outputs(make, tmp_path):
    store = PausingStoreDouble(tmp_path / "objects")
    harness = make(store=store, **SILENT)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    zombie, outcome = start(harness, job_id)
    assert store.paused.wait(WAIT_S)

    assert harness.ctx.db(repo.request_cancel, "t1", job_id).state == "CANCELLING"
    assert reap_now(harness) == ([], [job_id])  # its worker went silent: the cancel is finished for it
    store.release.set()
    zombie.join(WAIT_S)

    assert outcome == ["lost"]
    job = harness.job(job_id)
    assert (job.state, job.output_keys, job.result_seed) == ("CANCELLED", {}, None)
    assert results(harness) == []


def test_a_job_deleted_while_running_stops_and_leaves_nothing_behind(make, caplog):
    harness = make(executor=ScriptedExecutorDouble(steps=300, step_s=0.02))
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    caplog.set_level(logging.INFO, logger="llada.worker")
    running, outcome = start(harness, job_id)
    wait_for(lambda: harness.executor.steps_run >= 2, "the job running")

    harness.ctx.db(lambda s: (s.execute(delete(Job).where(Job.id == job_id)), s.commit()))
    running.join(WAIT_S)

    assert outcome == ["lost"]  # no exception reaches Celery
    assert harness.executor.steps_run < 300  # stopped at its next step, not at the end
    assert results(harness) == []
    worker_records = [r for r in caplog.records if r.name == "llada.worker"]
    assert not [r for r in worker_records if r.levelno >= logging.ERROR or r.exc_info]  # calmly
    assert (lost_record(caplog).reason, lost_record(caplog).removed) == ("fenced while running", 0)
    assert any("fenced" in r.getMessage() for r in worker_records)


def test_a_database_outage_mid_job_costs_no_attempt(make):
    """Progress writes and cancel checks fail for a while; the job keeps computing and finishes once."""
    harness = make(executor=ScriptedExecutorDouble(steps=40, step_s=0.02))
    flaky = harness.ctx.sessions = FlakySessionsDouble(harness.ctx.sessions)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    running, outcome = start(harness, job_id)
    wait_for(lambda: harness.executor.steps_run >= 3, "the job running")

    flaky.down.set()
    at_outage = harness.executor.steps_run
    wait_for(lambda: harness.executor.steps_run >= at_outage + 10, "steps computed during the outage")
    flaky.down.clear()
    running.join(WAIT_S)

    assert flaky.refused >= 10 and outcome == ["SUCCEEDED"]
    job = harness.job(job_id)
    assert (job.state, job.attempts, job.progress_step) == ("SUCCEEDED", 1, 40)


class OutageAtTheEndExecutorDouble(ScriptedExecutorDouble):
    """Takes the database down as the job finishes computing and brings it back `outage_s` later."""

    def __init__(self, flaky: FlakySessionsDouble, outage_s: float):
        super().__init__(steps=3, step_s=0.01)
        self.flaky, self.outage_s = flaky, outage_s

    def run(self, *args, **kwargs):
        output = super().run(*args, **kwargs)
        self.flaky.down.set()
        threading.Timer(self.outage_s, self.flaky.down.clear).start()
        return output


def test_the_terminal_write_is_tried_again_through_an_outage(make):
    harness = make()
    flaky = harness.ctx.sessions = FlakySessionsDouble(harness.ctx.sessions)
    harness.ctx.executor = OutageAtTheEndExecutorDouble(flaky, outage_s=0.5)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)

    assert harness.runner().run(job_id) == "SUCCEEDED"

    assert flaky.refused >= 1
    job = harness.job(job_id)
    assert (job.attempts, job.output_keys) == (1, {"image": f"results/{job_id}/1/image.png"})


def test_a_database_error_that_is_not_an_outage_fails_the_job_without_showing_sql(make):
    harness = make()
    flaky = harness.ctx.sessions = FlakySessionsDouble(harness.ctx.sessions)
    job_id = harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)
    real_progress = harness.executor.run

    def run_with_a_broken_write(*args, **kwargs):
        flaky.fail_job_thread_once(ProgrammingError("SELECT secret FROM jobs WHERE id = %(id)s", {"id": 1},
                                                    Exception("column does not exist")))
        return real_progress(*args, **kwargs)
    harness.executor.run = run_with_a_broken_write

    assert harness.runner().run(job_id) == "FAILED"

    job = harness.job(job_id)
    assert job.error_code == "INTERNAL" and job.attempts == 1
    assert "SELECT" not in job.error_message and "secret" not in job.error_message
