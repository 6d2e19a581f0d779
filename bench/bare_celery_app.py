"""The floor for bench/queue_overhead.py: a bare Celery task on the same broker, with no database,
object store or claim, and a result backend to see it finish (the service uses the database instead)."""

from __future__ import annotations

import time
from pathlib import Path

from celery import Celery

from shared.queue import celery_config
from shared.settings import get_settings
from workers.celery_app import worker_config

BARE_QUEUE = "bench.bare"
BARE_TASK = "bench.noop"


def make_app(settings=None) -> Celery:
    settings = settings or get_settings()
    app = Celery("bench-bare", set_as_current=False)
    app.conf.update(worker_config(settings))
    app.conf.update(task_default_queue=BARE_QUEUE, task_ignore_result=False, result_expires=300)
    results = Path(settings.data_dir) / "bench-results"
    results.mkdir(parents=True, exist_ok=True)
    # Same broker; results through a folder (filesystem broker) or Redis, whichever the broker is.
    broker = celery_config(settings)["broker_url"]
    app.conf.result_backend = broker if broker.startswith("redis") else f"file://{results}"

    @app.task(name=BARE_TASK)
    def noop() -> tuple[float, float]:
        started = time.time()
        return started, time.time()

    return app


app = make_app()
