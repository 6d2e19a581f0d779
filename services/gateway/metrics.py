"""Prometheus metrics: requests and latencies per method (an interceptor, which also writes the access
log) and jobs by state (read from the database at scrape time, so every replica reports the same truth)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from services.gateway.handlers import wrap_handler
from shared.jobs import JobState
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

log = logging.getLogger(__name__)
# A WatchJob stream that delivered one of these ended because its job did.
TERMINAL_JOB_STATES = frozenset({pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED,
                                 pb.JOB_STATE_EXPIRED})
access_log = logging.getLogger("llada.gateway.access")


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter("llada_gateway_requests", "gRPC requests by method and status code",
                                ["method", "code"], registry=registry)
        self.latency = Histogram("llada_gateway_request_seconds", "gRPC request latency by method "
                                 "(streams: until the stream ends)", ["method"], registry=registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600))

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)
        # The access log: refusals and errors at info, the (many) successful calls at debug.
        access_log.log(logging.DEBUG if code == "OK" else logging.INFO, "rpc",
                       extra={"method": method, "code": code, "seconds": round(seconds, 4)})


class JobsByStateCollector:
    """``count_by_state() -> {state: n}`` is called on every scrape."""

    def __init__(self, count_by_state: Callable[[], dict[str, int]]):
        self._count = count_by_state

    def collect(self):
        family = GaugeMetricFamily("llada_jobs", "Jobs in the database by state", labels=["state"])
        try:
            counts = self._count()
        except Exception:  # a scrape must not fail because the database blinked; no sample is not a zero
            log.exception("counting jobs by state failed")
            yield family
            return
        # Every state, zeros included: an idle queue reads QUEUED 0, not "no data", to a dashboard or a scaler.
        for state in JobState:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


def _code_name(context) -> str:
    try:
        code = context.code()
    except Exception:  # older grpc.aio contexts
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN"


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: GatewayMetrics):
        self._metrics = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]
        metrics = self._metrics

        def unary(behaviour):
            async def call(request, context):
                start, code = time.perf_counter(), "OK"
                try:
                    return await behaviour(request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"  # the client went away (or the server is stopping)
                    raise
                except BaseException:
                    code = _code_name(context)
                    raise
                finally:
                    metrics.observe(method, code, time.perf_counter() - start)
            return call

        def streaming(behaviour):
            async def call(request, context):
                start, code, ended = time.perf_counter(), "OK", False
                try:
                    async for item in behaviour(request, context):
                        ended = isinstance(item, pb.Job) and item.state in TERMINAL_JOB_STATES
                        yield item
                except asyncio.CancelledError:
                    # The client went away (or the server is stopping) — unless it already holds the terminal
                    # snapshot: a client closing its watch then (as the SDK does) races the stream's own end.
                    code = "OK" if ended else "CANCELLED"
                    raise
                except BaseException:
                    code = _code_name(context)
                    raise
                finally:
                    metrics.observe(method, code, time.perf_counter() - start)
            return call

        return wrap_handler(handler, unary=unary, streaming=streaming)
