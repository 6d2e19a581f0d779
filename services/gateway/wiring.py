"""Builds the gateway's dependencies from Settings: database, object store, event bus, queue producer."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from services.gateway.servicer import GatewayDeps, ReadSessions
from shared.db import make_engine, normalize_url, session_factory, upgrade
from shared.settings import Settings

# The name of the gateway's Redis connections (CLIENT LIST): one subscription for all its watches, one publisher.
EVENT_CLIENT_NAME = "llada-gateway"


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


def gateway_sessions(database_url: str, *, threads: int | None = None) -> tuple[sessionmaker, ReadSessions | None]:
    """The gateway's sessions, and those for its reads: on Postgres one connection of the same pool for a whole
    read, in autocommit, so a read costs its statements alone (one checkout and its ping, no BEGIN, no
    COMMIT); on SQLite None (the same sessions)."""
    engine = make_engine(database_url, threads=threads)
    if is_sqlite(database_url):
        return session_factory(engine), None
    reads = engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextlib.contextmanager
    def read_session() -> Iterator[Session]:
        with reads.connect() as connection, Session(bind=connection, expire_on_commit=False) as session:
            yield session
    return session_factory(engine), read_session


def deps_from_settings(settings: Settings) -> GatewayDeps:
    # Imported here: the bus and the queue connect to their backends, which only the running service needs.
    from shared.events import event_bus_from_settings
    from shared.objectstore import object_store_from_settings
    from shared.queue import enqueue_run_job

    if is_sqlite(settings.database_url):
        # Embedded mode has no migration job: bring the local database up to date (a no-op when it is).
        upgrade(settings.database_url)
    elif settings.default_api_key is not None and settings.default_api_key.get_secret_value():
        logging.getLogger("llada.gateway").warning(
            "LLADA_DEFAULT_API_KEY is set outside the embedded mode: anyone with it acts as tenant %r",
            settings.default_tenant)
    from services.gateway.server import BLOCKING_THREADS

    # Every blocking call of the RPCs runs on one of BLOCKING_THREADS threads: one connection for each.
    sessions, read_sessions = gateway_sessions(settings.database_url, threads=BLOCKING_THREADS)

    def enqueue(job_id: str, priority: int) -> None:
        enqueue_run_job(job_id, priority=priority, settings=settings)

    return GatewayDeps(settings=settings, sessions=sessions, store=object_store_from_settings(settings),
                       events=event_bus_from_settings(settings, client_name=EVENT_CLIENT_NAME), enqueue=enqueue,
                       read_sessions=read_sessions)
