"""Migration 0004 (`jobs.handed_back`) goes up and down on SQLite and Postgres keeping the jobs, and existing
rows read 0."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from shared.db import make_engine, upgrade
from shared.db.migrate import alembic_config, current_revision


def columns(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()


def test_migration_0004_adds_handed_back_with_zero_for_existing_jobs(fresh_db_url):
    upgrade(fresh_db_url, "0003")
    engine = make_engine(fresh_db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO jobs (id, tenant, kind, params, priority, input_keys, state, progress_step, "
                          "progress_total, attempts, timings, output_keys, created_at, cancel_requested) VALUES "
                          "('j1', 't', 'UNDERSTAND', '{}', 0, '{}', 'RUNNING', 0, 0, 2, '{}', '{}', "
                          "CURRENT_TIMESTAMP, false)"))
    engine.dispose()

    upgrade(fresh_db_url, "0004")
    assert "handed_back" in columns(fresh_db_url)
    engine = make_engine(fresh_db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT attempts, handed_back FROM jobs WHERE id = 'j1'")).one() == (2, 0)
    engine.dispose()

    command.downgrade(alembic_config(fresh_db_url), "0003")
    assert current_revision(fresh_db_url) == "0003" and "handed_back" not in columns(fresh_db_url)
    upgrade(fresh_db_url)
    assert "handed_back" in columns(fresh_db_url)
