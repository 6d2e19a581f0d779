"""The queue producer: sends `run_job(job_id)` to the workers **by name** (no import of `workers`).

`celery_config(settings)` is the broker configuration both sides must agree on (broker URL and
transport options, queue name, serialisation); the worker app adds its own execution settings
(acks_late, prefetch, …) on top of it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from celery import Celery

from shared.filesystem_transport import TRANSPORT as FILESYSTEM_TRANSPORT
from shared.jobs import PRIORITY_MAX, PRIORITY_MIN
from shared.settings import Settings, get_settings

RUN_JOB_TASK = "llada.run_job"


def filesystem_broker_dirs(broker_url: str) -> dict[str, Path]:
    """The folders of kombu's filesystem transport for a `filesystem://<dir>` URL (created here)."""
    root = Path(urlparse(broker_url).path or ".llada/broker")
    dirs = {"queue": root / "queue", "control": root / "control", "processed": root / "processed"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    return dirs


def celery_config(settings: Settings) -> dict[str, Any]:
    scheme = urlparse(settings.broker_url).scheme
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "task_default_queue": settings.queue_name,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,  # results live in Postgres and the object store, not a result backend
        "broker_connection_retry_on_startup": True,
    }
    if scheme == "filesystem":
        dirs = filesystem_broker_dirs(settings.broker_url)
        config["broker_url"] = "filesystem://"
        config["broker_transport"] = FILESYSTEM_TRANSPORT  # kombu's, with an atomic put
        config["broker_transport_options"] = {
            # One folder both ways: producers write where consumers read.
            "data_folder_in": str(dirs["queue"]),
            "data_folder_out": str(dirs["queue"]),
            "control_folder": str(dirs["control"]),
            "processed_folder": str(dirs["processed"]),
            "store_processed": False,
        }
    elif scheme in ("redis", "rediss"):
        config["broker_transport_options"] = {
            # Above the longest job, or Redis re-delivers a task that is still running (ARCHITECTURE §3).
            "visibility_timeout": settings.visibility_timeout_s,
            "queue_order_strategy": "priority",
            "priority_steps": list(range(PRIORITY_MIN, PRIORITY_MAX + 1)),
        }
    return config


def broker_priority(priority: int, broker_url: str) -> int:
    """Job priority (higher runs first) → the broker's: Redis pops priority 0 first, AMQP the highest."""
    priority = max(PRIORITY_MIN, min(PRIORITY_MAX, priority))
    if urlparse(broker_url).scheme in ("redis", "rediss"):
        return PRIORITY_MAX - priority
    return priority


_apps: dict[tuple, Celery] = {}
_apps_lock = threading.Lock()


def producer_app(settings: Settings) -> Celery:
    """A Celery app for sending only, one per broker configuration and process."""
    key = (settings.broker_url, settings.queue_name, settings.visibility_timeout_s)
    with _apps_lock:
        app = _apps.get(key)
        if app is None:
            app = Celery("llada-producer", set_as_current=False)
            app.conf.update(celery_config(settings))
            _apps[key] = app
        return app


def enqueue_run_job(job_id: str, *, priority: int = 0, settings: Settings | None = None) -> str:
    """Send `llada.run_job(job_id)`; returns the Celery task id. Safe to repeat: claiming is idempotent."""
    settings = settings or get_settings()
    app = producer_app(settings)
    result = app.send_task(
        RUN_JOB_TASK,
        args=[job_id],
        queue=settings.queue_name,
        priority=broker_priority(priority, settings.broker_url),
    )
    return result.id
