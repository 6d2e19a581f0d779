"""The seed a job ran with is kept (migration 0002, `jobs.result_seed`): written by finish_job, read back,
and the migration goes down and up again on SQLite and Postgres with the data of other columns intact."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect

from shared import attempts
from shared import repository as repo
from shared.db import make_engine, session_factory, upgrade
from shared.db.migrate import alembic_config, current_revision
from shared.jobs import JobKind

LARGEST_SEED = 2**63 - 1  # the model draws seeds in [0, 2**63): needs a 64-bit column


def test_finish_job_stores_the_seed_and_it_reads_back(s):
    job = repo.submit_job(s, tenant="t", request_id=None, kind=JobKind.TEXT_TO_IMAGE, params={"prompt": "x"},
                             input_keys={}, priority=0).job
    attempt = attempts.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    attempts.finish_job(s, attempt, output_keys={"image": f"results/{job.id}/1/image.png"}, seed=LARGEST_SEED)
    s.expire_all()

    assert repo.get_job(s, "t", job.id).result_seed == LARGEST_SEED


def test_a_job_without_an_image_has_no_seed(s):
    job = repo.submit_job(s, tenant="t", request_id=None, kind=JobKind.UNDERSTAND, params={"question": "?"},
                             input_keys={}, priority=0).job
    attempt = attempts.claim_job(s, job.id, "w1", heartbeat_timeout_s=60)
    attempts.finish_job(s, attempt, output_keys={}, output_text="an answer")
    s.expire_all()

    assert repo.get_job(s, "t", job.id).result_seed is None


def seed_columns(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        return [c["name"] for c in inspect(engine).get_columns("jobs") if c["name"] == "result_seed"]
    finally:
        engine.dispose()


def test_migration_0002_downgrades_and_upgrades_keeping_the_jobs(fresh_db_url):
    upgrade(fresh_db_url)
    assert seed_columns(fresh_db_url) == ["result_seed"]
    engine = make_engine(fresh_db_url)
    with session_factory(engine)() as s:
        job = repo.submit_job(s, tenant="t", request_id="r1", kind=JobKind.TEXT_TO_IMAGE,
                                 params={"prompt": "kept"}, input_keys={}, priority=0).job
        job_id = job.id
    engine.dispose()

    command.downgrade(alembic_config(fresh_db_url), "0001")
    assert current_revision(fresh_db_url) == "0001" and seed_columns(fresh_db_url) == []
    upgrade(fresh_db_url)

    assert seed_columns(fresh_db_url) == ["result_seed"]
    engine = make_engine(fresh_db_url)
    with session_factory(engine)() as s:
        job = repo.get_job(s, "t", job_id)
        assert job.params == {"prompt": "kept"} and job.result_seed is None
    engine.dispose()
