"""The reaper's Prometheus families, served on reaper_metrics_port with the process collectors: what each pass
did to jobs and objects, and whether the passes succeed."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics_server import process_registry

REGISTRY = process_registry()
JOBS = Counter("llada_reaper_jobs", "What the reaper did: requeued (a worker's lease ran out), dead (dead-lettered "
               "after max_attempts, or a pending cancel finished), resent (a lost message), expired (results past "
               "retention), swept (orphaned objects removed)", ["action"], registry=REGISTRY)
PASSES = Counter("llada_reaper_passes", "Reaper passes by outcome (ok, error)", ["outcome"], registry=REGISTRY)
PASS_SECONDS = Histogram("llada_reaper_pass_seconds", "One reaper pass", registry=REGISTRY,
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
ACTIONS = ("requeued", "dead", "resent", "expired", "swept")
for _action in ACTIONS:  # every action from the first scrape: a rate over "no data" is no alert
    JOBS.labels(_action)
for _outcome in ("ok", "error"):
    PASSES.labels(_outcome)


def record_pass(report, seconds: float) -> None:
    """``report`` is a ReapReport, or None for a pass that failed."""
    PASS_SECONDS.observe(seconds)
    PASSES.labels("ok" if report is not None else "error").inc()
    for action in ACTIONS if report is not None else ():
        JOBS.labels(action).inc(len(getattr(report, action)))
