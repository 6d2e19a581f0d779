"""Throwaway Postgres databases for tests: the admin URL (trust auth on loopback, or $LLADA_TEST_POSTGRES_ADMIN),
and a context manager that creates an empty database, yields its URL and drops it however the test ended.
Imported by package: `from tests.postgres_databases import …`."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

POSTGRES_ADMIN_URL = os.environ.get("LLADA_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_available() -> bool:
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2).close()
        return True
    except psycopg.Error:
        return False


def skip_without_postgres() -> None:
    if not postgres_available():
        pytest.skip(f"no PostgreSQL at {POSTGRES_ADMIN_URL}")


def database_url(name: str, *, driver: bool = True) -> str:
    """The URL of database `name` on the admin URL's server: SQLAlchemy's psycopg form, or plain libpq."""
    url = f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    return url.replace("postgresql://", "postgresql+psycopg://", 1) if driver else url


@contextlib.contextmanager
def throwaway_database(prefix: str = "llada_test", *, driver: bool = True) -> Iterator[str]:
    """A new, empty database (the test is skipped without a server), dropped afterwards even if connections
    to it are still open. Yields its URL (see `database_url`)."""
    skip_without_postgres()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name, driver=driver)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
