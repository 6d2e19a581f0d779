"""Builds the gateway's dependencies from Settings: database, object store, event bus, queue producer."""

from __future__ import annotations

import logging

from sqlalchemy.engine import make_url

from services.gateway.servicer import GatewayDeps
from shared.db import make_engine, normalize_url, session_factory, upgrade
from shared.settings import Settings

# The name of the gateway's Redis connections (CLIENT LIST): one subscription for all its watches, one publisher.
EVENT_CLIENT_NAME = "llada-gateway"


def is_sqlite(url: str) -> bool:
    return make_url(normalize_url(url)).get_backend_name() == "sqlite"


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
    engine = make_engine(settings.database_url, threads=BLOCKING_THREADS)
    sessions = session_factory(engine)
    # Reads on Postgres: the same pool's connections in autocommit, so each read costs its statements only.
    read_sessions = None if is_sqlite(settings.database_url) else session_factory(
        engine.execution_options(isolation_level="AUTOCOMMIT"))

    def enqueue(job_id: str, priority: int) -> None:
        enqueue_run_job(job_id, priority=priority, settings=settings)

    return GatewayDeps(settings=settings, sessions=sessions, store=object_store_from_settings(settings),
                       events=event_bus_from_settings(settings, client_name=EVENT_CLIENT_NAME), enqueue=enqueue,
                       read_sessions=read_sessions)
