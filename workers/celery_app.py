"""The Celery worker app: ``celery -A workers.celery_app worker``.

Broker settings come from `shared.queue.celery_config` (the producer's side, so both agree on the queue
and transport); this adds what only a consumer needs (ARCHITECTURE §3): late acks, reject on a lost
worker, one message prefetched per job slot, a visibility timeout above the longest job — and how many
jobs the worker admits at once, which follows from `Settings.worker_executor` (`worker_pool_for`), so the
deployment commands need no ``--pool`` / ``--concurrency`` flags.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlparse

from celery import Celery
from celery.signals import (setup_logging, worker_init, worker_process_init, worker_ready, worker_shutdown,
                            worker_shutting_down)

from shared.logs import configure_logging
from shared.queue import RUN_JOB_TASK, celery_config
from shared.settings import Settings, get_settings
from workers.executor_choice import ENGINE_EXECUTOR, jobs_at_once
from workers.lifecycle import EXIT_MODEL_UNAVAILABLE, lifecycle
from workers.readiness import ReadinessFile

# kombu's filesystem transport polls its folder; 0.05 s keeps queue latency small at a few syscalls
# per second (the issue asks for ≤ 0.05 s).
FILESYSTEM_POLLING_INTERVAL_S = 0.05
# After a pool child dies, Celery waits this long for a late result before declaring the job lost and
# freeing the slot (default 10 s). Our jobs report through the database, never through that result.
WORKER_LOST_WAIT_S = 1.0
# How often the worker looks whether one of its processes found the model unloadable.
LIFECYCLE_POLL_S = 0.5

# The readiness file of this worker (made in worker_init, in the main process, before any fork).
_readiness = ReadinessFile(None, lifecycle.ready)


def worker_pool_for(settings: Settings) -> tuple[str, int]:
    """(Celery pool, concurrency) for the configured executor (`workers.executor_choice.jobs_at_once`).

    The engine's jobs each wait on their engine call in a thread (the work itself runs in the Ray actors,
    not under the GIL here). The in-process Pipeline runs one job per process, in a prefork child: the
    parent outlives a child that dies mid-job and rejects its message (task_reject_on_worker_lost), and
    keeps consuming.
    """
    pool = "threads" if settings.worker_executor == ENGINE_EXECUTOR else "prefork"
    return pool, jobs_at_once(settings)


def worker_config(settings: Settings) -> dict[str, Any]:
    """The producer's broker configuration plus the consumer-side execution settings."""
    config = celery_config(settings)
    options = dict(config.get("broker_transport_options", {}))
    # Redis re-delivers an unacked message after this; it must exceed the longest job.
    options["visibility_timeout"] = settings.visibility_timeout_s
    if urlparse(settings.broker_url).scheme == "filesystem":
        options["polling_interval"] = FILESYSTEM_POLLING_INTERVAL_S
    config["broker_transport_options"] = options
    pool, concurrency = worker_pool_for(settings)
    config.update(
        worker_pool=pool,
        worker_concurrency=concurrency,
        # Ack after the job, so a worker that dies mid-job leaves the message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message per job slot: a message prefetched beyond them would wait behind a long job.
        worker_prefetch_multiplier=1,
        worker_lost_wait=WORKER_LOST_WAIT_S,
        # A broker connection blip must not kill a job minutes into the GPU: it keeps running and records
        # its outcome in the database; the message redelivered later finds the job finished (claim: no-op).
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_ignore_result=True,  # no result backend: Postgres holds the outcome
        # Celery's stdout/stderr proxies have no fileno(), which ray.init needs (faulthandler.enable):
        # with the engine, the worker keeps the process's real streams (its log output is unchanged).
        worker_redirect_stdouts=pool != "threads",
        # Task events (received, started, succeeded, failed…) for Flower and `celery events`, on the production
        # broker. The embedded filesystem broker would only write them as files that nobody reads.
        worker_send_task_events=urlparse(settings.broker_url).scheme in ("redis", "rediss"),
    )
    return config


def make_celery_app(settings: Settings | None = None) -> Celery:
    """A worker app for `settings` with the run_job task registered under `RUN_JOB_TASK`."""
    from workers.tasks import run_job

    settings = settings or get_settings()
    celery = Celery("llada-worker", set_as_current=False)
    celery.conf.update(worker_config(settings))
    celery.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)(run_job)
    return celery


@setup_logging.connect
def _structured_logs(**_kwargs) -> None:
    """The worker's log lines are the service's (shared.logs: JSON with job_id, attempt and tenant, or text by
    `LLADA_LOG_FORMAT`), Celery's own included; connecting here keeps Celery from installing its handlers."""
    configure_logging(get_settings(), service="worker")


@worker_process_init.connect
def _load_model_in_background(**_kwargs) -> None:
    """Each prefork pool process starts loading the model at once, so the first job does not wait for it
    alone. In a thread: the process keeps answering the parent meanwhile (which gives a child a few seconds
    to come up); the first job waits on the same lock. A load that fails marks the lifecycle, and the
    parent's watcher stops the worker. Its metrics are served from here: this process runs the jobs."""
    _serve_telemetry()
    threading.Thread(target=_warm_up, name="model-warm-up", daemon=True).start()


def _serve_telemetry() -> None:
    """This process's metrics endpoint and its traces' exporter (a thread each: started after any fork)."""
    from shared.metrics_server import serve_metrics
    from shared.tracing import setup_tracing
    from workers.metrics import REGISTRY

    settings = get_settings()
    serve_metrics(REGISTRY, settings.worker_metrics_port, settings.metrics_host)
    setup_tracing(settings, "worker")


def _warm_up() -> bool:
    """Loads this process's model; a loaded one lets the worker say it is ready (shared with the parent)."""
    from workers.tasks import warm_up

    loaded = warm_up()
    if loaded:
        lifecycle.model_loaded()
    return loaded


@worker_init.connect
def _prepare_worker(sender=None, **_kwargs) -> None:
    """In the worker process, before it consumes. With the thread pool the jobs run here: the engine (Ray,
    the actors loading their weights) starts now and the worker consumes only once the model is loaded,
    or exits EXIT_MODEL_UNAVAILABLE. (Not under prefork: the parent would load a model that only its
    children use.) Loading here, before Celery installs its signal handlers, also keeps SIGTERM Celery's:
    ray.init puts Ray's crash handler on SIGTERM, which aborts the process 3 s after the signal."""
    global _readiness
    _readiness = ReadinessFile(get_settings().worker_ready_file, lifecycle.ready)
    _readiness.clear()  # a file a killed predecessor left in this container is not this worker's
    threading.Thread(target=_stop_when_unready, name="lifecycle-watch", daemon=True).start()
    app_conf = getattr(getattr(sender, "app", None), "conf", None)
    if app_conf is not None and app_conf.worker_pool == "threads":
        _serve_telemetry()  # the jobs run in this process's threads
        if not _warm_up():
            raise SystemExit(EXIT_MODEL_UNAVAILABLE)


@worker_ready.connect
def _say_ready(**_kwargs) -> None:
    """Celery consumes now; the readiness file appears once the model is loaded too (workers/readiness.py)."""
    _readiness.start()


def _stop_when_unready() -> None:
    """The worker stops (warm, with the lifecycle's exit code) once a process of it could not load the model."""
    from celery.worker import state

    while not lifecycle.exit_code():
        time.sleep(LIFECYCLE_POLL_S)
    _readiness.clear()
    state.should_stop = lifecycle.exit_code()


@worker_shutting_down.connect
def _begin_drain(how: str = "Warm", **_kwargs) -> None:
    """SIGTERM: Celery stops consuming and waits for the running jobs; they get `drain_timeout_s` to
    finish, then hand their jobs back. A second SIGTERM cuts the drain short."""
    if how == "Warm":
        lifecycle.begin_drain(get_settings().drain_timeout_s)
    _readiness.clear()  # a draining worker takes no job: not ready, at once


@worker_shutdown.connect
def _release_model(**_kwargs) -> None:
    """After the last job: stop the engine's actors and Ray, then Celery exits (in that order)."""
    from workers.tasks import release_worker_context

    _readiness.clear(stop=True)
    release_worker_context()


# `celery -A workers.celery_app` looks for `app`.
app = make_celery_app()
