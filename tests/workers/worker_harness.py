"""A real WorkerContext on SQLite + a local object folder + the embedded event bus, with
ScriptedExecutorDouble in place of the model (executor_doubles.py); and helpers the worker tests share."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

from tests.workers.executor_doubles import ScriptedExecutorDouble
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.events import EmbeddedEventBus
from shared.jobs import JobKind, validate_params
from shared.objectstore import LocalObjectStore, input_key
from shared.settings import Settings
from workers.tasks import JobRunner, WorkerContext

# Fast beats so that staleness is reached in about a second.
TEST_HEARTBEAT_INTERVAL_S = 0.05
TEST_HEARTBEAT_TIMEOUT_S = 1.0


def png_bytes(size=(32, 32), color=(10, 120, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class WorkerHarness:
    ctx: WorkerContext
    executor: ScriptedExecutorDouble

    def runner(self) -> JobRunner:
        return JobRunner(self.ctx)

    def submit(self, kind: JobKind, **params) -> str:
        """A QUEUED job as the gateway stores it: validated params with defaults, inputs in the store."""
        image = params.pop("image", None)
        checked = validate_params(kind, params, max_prompt_chars=self.ctx.settings.max_prompt_chars)
        job = self.ctx.db(repo.submit_job, tenant="t1", request_id=None, kind=kind,
                             params=checked.model_dump(mode="json"), input_keys={}, priority=0).job
        if image is not None:
            key = input_key(job.id, "image")
            self.ctx.store.put(key, image, "image/png")
            with self.ctx.sessions() as s:
                row = s.get(type(job), job.id)
                row.input_keys = {"image": key}
                s.commit()
        return job.id

    def job(self, job_id: str):
        return self.ctx.db(repo.load_job, job_id)


def make_settings(tmp_path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path, heartbeat_interval_s=TEST_HEARTBEAT_INTERVAL_S,
                  heartbeat_timeout_s=TEST_HEARTBEAT_TIMEOUT_S, max_attempts=3)
    values.update(overrides)
    return Settings(**values)


def make_harness(tmp_path, *, executor=None, store=None, **overrides) -> tuple[WorkerHarness, object]:
    settings = make_settings(tmp_path, **overrides)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    executor = executor or ScriptedExecutorDouble(steps=5, step_s=0.01)
    ctx = WorkerContext(settings=settings, sessions=session_factory(engine),
                        store=store or LocalObjectStore(tmp_path / "objects"),
                        events=EmbeddedEventBus(tmp_path / "events.db"), executor=executor)
    return WorkerHarness(ctx, executor), engine
