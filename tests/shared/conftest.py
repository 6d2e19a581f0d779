"""Database fixtures: every repository test runs on SQLite and on a throwaway Postgres database."""

from __future__ import annotations

import pytest
from sqlalchemy import delete

from tests.postgres_databases import throwaway_database
from shared.db import ApiKey, Job, make_engine, session_factory, upgrade
from shared.db.models import WebhookDelivery, WebhookSecret


@pytest.fixture(scope="session")
def postgres_url():
    """One migrated database for the run (emptied after each test by `db_url`)."""
    with throwaway_database("llada_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        upgrade(url)
        yield url
    else:
        url = request.getfixturevalue("postgres_url")
        yield url
        engine = make_engine(url)
        with engine.begin() as conn:  # one database for the run, emptied after each test
            for table in (Job, ApiKey, WebhookDelivery, WebhookSecret):
                conn.execute(delete(table))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_db_url(request, tmp_path):
    """A database of its own, not yet migrated: for migration round trips, which must not touch the one
    database other tests share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
        return
    with throwaway_database("llada_test") as url:
        yield url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def Session(engine):
    return session_factory(engine)


@pytest.fixture
def s(Session):
    with Session() as session:
        yield session
