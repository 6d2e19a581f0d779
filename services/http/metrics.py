"""Prometheus metrics of the front door: requests by route template, method and status, and their latency."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from shared.metrics_server import process_registry

REGISTRY = process_registry()
REQUESTS = Counter("llada_http_requests", "HTTP requests answered, by route template, method and status",
                   ["route", "method", "status"], registry=REGISTRY)
LATENCY = Histogram("llada_http_request_seconds", "Time to the response's status line, by route template and method "
                    "(a stream counts until its headers)", ["route", "method"], registry=REGISTRY,
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))


class RequestMetrics:
    """Pure ASGI middleware. The route is the matched template ("/v1/jobs/{job_id}"), never the raw path, so that
    ids do not become labels; unmatched paths count as "unmatched"."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed_send(message):
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUESTS.labels(route, scope["method"], str(message["status"])).inc()
                LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed_send)
