"""The webhook dispatcher's Prometheus families, served on webhook_metrics_port with the process collectors."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics_server import process_registry

REGISTRY = process_registry()
TRIES = Counter("llada_webhook_tries", "Webhook tries by event and result: delivered (2xx), failed (another status, "
                "no answer, a refused address; retried with backoff unless final)", ["event", "result"],
                registry=REGISTRY)
TRY_SECONDS = Histogram("llada_webhook_try_seconds", "One try: signing, connecting, sending and the answer",
                        ["event"], registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
PASSES = Counter("llada_webhook_passes", "Dispatcher passes (a claim of due deliveries) by outcome (ok, error)",
                 ["outcome"], registry=REGISTRY)
for _outcome in ("ok", "error"):
    PASSES.labels(_outcome)


def record_try(event: str, delivered: bool, seconds: float) -> None:
    TRIES.labels(event, "delivered" if delivered else "failed").inc()
    TRY_SECONDS.labels(event).observe(seconds)
