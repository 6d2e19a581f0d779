"""A worker's Prometheus families: a job's life in numbers, labelled by kind (and outcome where it ends), never by
job or tenant. Served on worker_metrics_port by the process that runs the jobs (the prefork child with the
in-process Pipeline, the worker itself with the engine's thread pool), with the process collectors.

Buckets span 10 ms to 30 min: a toy job's tokenize stage to a full-size thinking-mode image on a busy GPU.
"""

from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics_server import process_registry
from workers.lifecycle import lifecycle

REGISTRY = process_registry()
JOB_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800)
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

QUEUE_WAIT = Histogram("llada_job_queue_wait_seconds", "From submit to a worker's first claim of the job",
                       ["kind"], buckets=JOB_BUCKETS, registry=REGISTRY)
ATTEMPTS = Counter("llada_job_attempts", "Attempts started (claims), first or later", ["kind"], registry=REGISTRY)
ATTEMPT_SECONDS = Histogram("llada_job_attempt_seconds", "One attempt, from its claim to how it ended: succeeded, "
                            "failed, cancelled, handed_back or lost (fenced off)", ["kind", "outcome"],
                            buckets=JOB_BUCKETS, registry=REGISTRY)
STAGE_SECONDS = Histogram("llada_job_stage_seconds", "Seconds of a succeeded attempt in each stage (tokenize, think, "
                          "denoise, decode, upload)", ["kind", "stage"], buckets=JOB_BUCKETS, registry=REGISTRY)
STEP_SECONDS = Histogram("llada_denoise_step_seconds", "One denoising step of a running job (think and denoise), as "
                         "its progress reports it", ["kind", "stage"], buckets=STEP_BUCKETS, registry=REGISTRY)
CANCELS = Counter("llada_job_cancels_honoured", "Running jobs stopped for a cancel request", ["kind"],
                  registry=REGISTRY)

READY = Gauge("llada_worker_ready", "1 while this worker takes jobs: its model is loaded and it is neither draining "
              "nor stopping (what its readiness file and probe say)", registry=REGISTRY)
READY.set_function(lambda: 1.0 if lifecycle.ready() else 0.0)

# JobRunner.run's answers for an attempt, as the `outcome` label.
OUTCOMES = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled", "handed back": "handed_back",
            "lost": "lost"}


def attempt_started(kind: str, number: int, created_at: datetime, claimed_at: datetime) -> None:
    ATTEMPTS.labels(kind).inc()
    if number == 1:  # a later attempt's wait would count the earlier attempts' run time
        QUEUE_WAIT.labels(kind).observe(max(0.0, (claimed_at - created_at).total_seconds()))


def attempt_ended(kind: str, outcome: str, seconds: float) -> None:
    label = OUTCOMES.get(outcome, outcome)
    ATTEMPT_SECONDS.labels(kind, label).observe(seconds)
    if outcome == "CANCELLED":
        CANCELS.labels(kind).inc()


def stages(kind: str, timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        if stage != "total":
            STAGE_SECONDS.labels(kind, stage).observe(seconds)


class StepClock:
    """Turns a job's progress reports into step times: the time since the last report over the steps it
    advanced (the engine reports every poll, so several steps may land in one report)."""

    STAGES = ("think", "denoise")

    def __init__(self, kind: str):
        self.kind = kind
        self._last: tuple[str, int, float] | None = None

    def report(self, stage: str, step: int) -> None:
        now = time.perf_counter()
        last, self._last = self._last, (stage, step, now)
        if stage not in self.STAGES or last is None or last[0] != stage or step <= last[1]:
            return
        advanced = step - last[1]
        per_step = (now - last[2]) / advanced
        for _ in range(advanced):
            STEP_SECONDS.labels(self.kind, stage).observe(per_step)
