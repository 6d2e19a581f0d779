"""The reaper removes objects no job row names (workers.sweep), a bounded slice per pass, and retention deletes
a job's objects before it marks the job EXPIRED."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from sqlalchemy import delete, update

from tests.workers.worker_harness import png_bytes
from shared import attempts
from shared import repository as repo
from shared.db import Job
from shared.db.types import utcnow
from shared.jobs import JobKind
from shared.objectstore import LocalObjectStore, input_key, result_key
from workers.reaper import Reaper
from workers.sweep import OrphanSweep


def make_reaper(harness, store=None, **overrides):
    settings = harness.ctx.settings.model_copy(update=overrides)
    return Reaper(settings, harness.ctx.sessions, store or harness.ctx.store, harness.ctx.events, lambda *a: None)


def objects(harness) -> list[str]:
    return [obj.key for obj in harness.ctx.store.list_after("")]


def age_object(harness, key: str, seconds: float) -> None:
    path = harness.ctx.store.root / key
    past = time.time() - seconds
    os.utime(path, (past, past))


def t2i(harness) -> str:
    return harness.submit(JobKind.TEXT_TO_IMAGE, prompt="fox", width=256, height=256)


def test_sweep_keeps_what_rows_name_and_what_a_live_attempt_is_writing(harness):
    done = harness.submit(JobKind.EDIT, instruction="night", image=png_bytes())
    assert harness.runner().run(done) == "SUCCEEDED"
    running = t2i(harness)
    attempt = harness.ctx.db(attempts.claim_job, running, "w", heartbeat_timeout_s=60)
    live = result_key(running, attempt.number, "image.png")
    harness.ctx.store.put(live, b"being written")
    young_input = input_key("no-row-yet", "image.png")  # a submit between its upload and its insert
    harness.ctx.store.put(young_input, b"img")
    before = objects(harness)

    assert make_reaper(harness).run_once().swept == []
    assert objects(harness) == before and live in before and young_input in before


def test_sweep_removes_objects_no_row_names(harness):
    # A deleted job's late upload, a fenced attempt's output, a cancelled job's output, an old row-less input.
    gone, moved_on, cancelled = t2i(harness), t2i(harness), t2i(harness)
    harness.ctx.db(attempts.claim_job, moved_on, "w1", heartbeat_timeout_s=60)
    harness.ctx.db(lambda s: (s.execute(update(Job).where(Job.id == moved_on).values(heartbeat_at=None)),
                              s.commit()))
    second = harness.ctx.db(attempts.claim_job, moved_on, "w2", heartbeat_timeout_s=60)
    harness.ctx.db(attempts.finish_job, second, output_keys={"image": result_key(moved_on, 2, "image.png")})
    harness.ctx.db(lambda s: (s.execute(delete(Job).where(Job.id == gone)), s.commit()))
    harness.ctx.db(repo.request_cancel, "t1", cancelled)
    strays = [result_key(gone, 1, "image.png"), result_key(moved_on, 1, "image.png"),
              result_key(cancelled, 1, "image.png"), input_key("never-inserted", "image.png")]
    kept = result_key(moved_on, 2, "image.png")
    for key in [*strays, kept]:
        harness.ctx.store.put(key, b"x")
    age_object(harness, strays[-1], 3600)

    swept = make_reaper(harness, orphan_grace_s=600).run_once().swept

    assert sorted(swept) == sorted(strays)
    assert objects(harness) == [kept]
    assert make_reaper(harness).run_once().swept == []  # idempotent


def test_sweep_is_bounded_per_pass_and_covers_the_store_over_several(harness):
    strays = [result_key(f"gone-{i:02d}", 1, "image.png") for i in range(7)]
    for key in strays:
        harness.ctx.store.put(key, b"x")
    sweep = OrphanSweep(harness.ctx.store, harness.ctx.sessions, input_grace_s=600, batch=3)

    passes = [sweep.run_once() for _ in range(3)]

    assert [len(p) for p in passes] == [3, 3, 1]
    assert sorted(k for p in passes for k in p) == strays and objects(harness) == []


class FailingDeleteStoreDouble(LocalObjectStore):
    """An object store whose deletes fail while `failing` is set (unreachable, or a permissions error)."""

    failing = True

    def delete(self, key):
        if self.failing:
            raise ConnectionError("object store unreachable")
        super().delete(key)

    def delete_prefix(self, prefix):
        if self.failing:
            raise ConnectionError("object store unreachable")
        return super().delete_prefix(prefix)


def test_retention_deletes_objects_before_marking_expired_and_retries_a_failed_delete(harness):
    store = FailingDeleteStoreDouble(harness.ctx.store.root)
    jobs = [harness.submit(JobKind.EDIT, instruction="night", image=png_bytes()) for _ in range(3)]
    for job_id in jobs:
        assert harness.runner().run(job_id) == "SUCCEEDED"
    harness.ctx.db(lambda s: (s.execute(update(Job).values(finished_at=utcnow() - timedelta(days=8))), s.commit()))
    reaper = make_reaper(harness, store=store, retention_s=7 * 24 * 3600.0)
    before = objects(harness)

    assert reaper.run_once().expired == []  # the store refused every delete: nothing marked
    assert [harness.job(j).state for j in jobs] == ["SUCCEEDED"] * 3 and objects(harness) == before

    store.failing = False
    assert sorted(reaper.run_once().expired) == sorted(jobs)
    assert [harness.job(j).state for j in jobs] == ["EXPIRED"] * 3
    assert objects(harness) == []
