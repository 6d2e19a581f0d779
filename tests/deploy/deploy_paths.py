"""Paths and agreed commands the deployment checks share. A module of its own name: `from conftest import`
would pick whichever test folder's conftest was imported first when several folders run together."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# The commands the images run, as agreed between the service authors. The worker takes no --pool or
# --concurrency: the Celery app sets them from the executor (workers.celery_app.worker_pool_for).
GATEWAY_COMMAND = ["python", "-m", "services.gateway"]
MIGRATE_COMMAND = ["python", "-m", "shared.db", "upgrade"]
REAPER_COMMAND = ["python", "-m", "workers.reaper"]
WEBHOOKS_COMMAND = ["python", "-m", "services.webhooks"]
HTTP_COMMAND = ["python", "-m", "services.http"]
WORKER_COMMAND = ["celery", "-A", "workers.celery_app", "worker", "--prefetch-multiplier=1", "--loglevel=INFO"]

# What a worker needs between the end of its drain (LLADA_DRAIN_TIMEOUT_S) and the end of its grace period:
# the hand-back (a database write and a message), closing the engine and Ray, Celery's exit. A few seconds on
# the tiny checkpoint; the GPU deployments leave 120 s (docs/operations.md).
DRAIN_MARGIN_S = 60
# The health check each process kind runs (services/healthcheck.py), by the command it checks.
HEALTHCHECK_ROLES = {tuple(GATEWAY_COMMAND): "gateway", tuple(REAPER_COMMAND): "reaper",
                     tuple(WEBHOOKS_COMMAND): "webhooks", tuple(WORKER_COMMAND): "worker", tuple(HTTP_COMMAND): "http"}
# The processes that keep a health file, by role: the variable naming it, set by their image under /tmp.
HEALTH_FILE_VARIABLES = {"worker": "LLADA_WORKER_READY_FILE", "reaper": "LLADA_REAPER_PASS_FILE",
                         "webhooks": "LLADA_WEBHOOK_PASS_FILE"}
