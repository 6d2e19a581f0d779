"""A job through the Celery worker's job runner (claim → engine → outputs → terminal state) with the engine
executor, the worker's default: on the session's Ray instance and engine (conftest), SQLite and a folder."""

from __future__ import annotations

import pytest
from PIL import Image

from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.events import EmbeddedEventBus
from shared.jobs import JobKind, validate_params
from shared.objectstore import LocalObjectStore, input_key
from shared.settings import Settings
from workers.engine.engine_backed import EngineBackedExecutor
from workers.executor_choice import executor_from_settings
from workers.tasks import JobRunner, WorkerContext


@pytest.fixture
def worker(tmp_path, engine):
    settings = Settings(data_dir=tmp_path, heartbeat_interval_s=0.5, heartbeat_timeout_s=5.0)
    upgrade(settings.database_url)
    db = make_engine(settings.database_url)
    ctx = WorkerContext(settings=settings, sessions=session_factory(db), store=LocalObjectStore(tmp_path / "objects"),
                        events=EmbeddedEventBus(tmp_path / "events.db"),
                        executor=EngineBackedExecutor(engine.config, engine=engine))
    yield ctx
    db.dispose()


def submit(ctx: WorkerContext, kind: JobKind, params: dict, image: bytes | None = None) -> str:
    checked = validate_params(kind, params, max_prompt_chars=ctx.settings.max_prompt_chars)
    keys = {}
    job = ctx.db(repo.submit_job, tenant="t", request_id=None, kind=kind, params=checked.model_dump(mode="json"),
                    input_keys=keys, priority=0).job
    if image is not None:
        key = input_key(job.id, "image")
        ctx.store.put(key, image, "application/octet-stream")
        with ctx.sessions() as s:
            s.get(type(job), job.id).input_keys = {"image": key}
            s.commit()
    return job.id


def test_the_default_executor_is_the_engine(tmp_path):
    # Built lazily: naming the engine starts nothing until the first job (or the worker's warm-up).
    assert isinstance(executor_from_settings(Settings(data_dir=tmp_path)), EngineBackedExecutor)


def test_a_text_to_image_job_runs_through_the_worker_on_the_engine(worker):
    job_id = submit(worker, JobKind.TEXT_TO_IMAGE, {"prompt": "a kite", "width": 128, "height": 128, "steps": 2,
                                                    "block_length": 8, "decoder_steps": 2, "seed": 3})

    assert JobRunner(worker).run(job_id) == "SUCCEEDED"

    job = worker.db(repo.load_job, job_id)
    assert job.state == "SUCCEEDED" and job.attempts == 1
    assert Image.open(worker.store.root / job.output_keys["image"]).size == (128, 128)
    assert job.stage == "decode" and job.timings["denoise"] > 0
    assert job.result_seed == 3


def test_a_job_submitted_without_a_seed_can_be_replayed_with_the_recorded_one(worker):
    params = {"prompt": "a kite", "width": 128, "height": 128, "steps": 2, "block_length": 8, "decoder_steps": 2}
    first = submit(worker, JobKind.TEXT_TO_IMAGE, params)
    assert JobRunner(worker).run(first) == "SUCCEEDED"
    seed = worker.db(repo.load_job, first).result_seed
    assert seed is not None

    again = submit(worker, JobKind.TEXT_TO_IMAGE, {**params, "seed": seed})
    assert JobRunner(worker).run(again) == "SUCCEEDED"

    images = [(worker.store.root / worker.db(repo.load_job, j).output_keys["image"]).read_bytes() for j in (first, again)]
    assert images[0] == images[1]


def test_an_undecodable_input_image_fails_the_job_naming_the_field(worker):
    job_id = submit(worker, JobKind.UNDERSTAND, {"question": "what?", "gen_length": 16, "steps": 4,
                                                 "block_length": 8}, image=b"not an image")

    assert JobRunner(worker).run(job_id) == "FAILED"

    job = worker.db(repo.load_job, job_id)
    assert (job.error_code, job.error_field) == ("INVALID_ARGUMENT", "understand.image")
