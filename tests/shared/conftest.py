"""Database fixtures: every repository test runs on SQLite and on a throwaway Postgres database."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest
from sqlalchemy import delete

from shared.db import ApiKey, Job, make_engine, session_factory, upgrade

# Admin connection used to create and drop the per-run test database (trust auth on loopback).
POSTGRES_ADMIN_URL = os.environ.get("LLADA_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_available() -> bool:
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url():
    if not _postgres_available():
        pytest.skip("no PostgreSQL at " + POSTGRES_ADMIN_URL)
    return POSTGRES_ADMIN_URL


@pytest.fixture(scope="session")
def postgres_url(postgres_admin_url):
    name = f"llada_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
            conn.execute(delete(Job))
            conn.execute(delete(ApiKey))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_db_url(request, tmp_path):
    """A database of its own, not yet migrated: for migration round trips, which must not touch the one
    database other tests share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'roundtrip.db'}"
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    name = f"llada_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield f"{admin_url.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
