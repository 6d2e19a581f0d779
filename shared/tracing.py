"""OpenTelemetry traces, one per job: the gateway's submit span starts it, its W3C `traceparent` is stored with the
job, and every attempt's worker continues it (the run, each model stage as it reports, the upload and the terminal
write). Stored with the job rather than only in the Celery message, the context survives what makes a new message:
the reaper's re-send of a lost one, a worker's hand-back, a re-queue after a lost lease.

Off unless `otlp_endpoint` is set (the OTLP/HTTP traces URL of a collector, e.g. http://otel-collector:4318/v1/traces):
then no span is recorded and jobs carry no trace id. Tests install their own provider (the SDK's in-memory exporter).
"""

from __future__ import annotations

import logging

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("llada.tracing")
TRACER = "llada-serve"
_PROPAGATOR = TraceContextTextMapPropagator()
# The provider this process's spans go to: None, OpenTelemetry's global one (a no-op unless set).
_provider = None


def setup_tracing(settings, service: str):
    """Exports this process's spans to `settings.otlp_endpoint` in batches; returns the provider (None, and nothing
    set up, without an endpoint)."""
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"llada-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    install(provider)
    log.info("tracing to an OTLP collector", extra={"endpoint": settings.otlp_endpoint})
    return provider


def install(provider) -> None:
    """Send this process's spans to `provider` (None: back to OpenTelemetry's global one). setup_tracing's, or a
    test's with the SDK's in-memory exporter."""
    global _provider
    _provider = provider


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER, tracer_provider=_provider)


def traceparent(span: trace.Span) -> str | None:
    """The W3C traceparent of a recording span (None when tracing is off)."""
    if not span.get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def context_of(traceparent_value: str | None) -> otel_context.Context | None:
    """The context a stored traceparent names, to continue its trace; None without one."""
    if not traceparent_value:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent_value})


# A job's model stages, in the order they run (a thinking pass before the image's denoising).
STAGE_ORDER = ("tokenize", "think", "denoise", "decode")


def trace_stages(started_ns: int, timings: dict[str, float]) -> None:
    """One span per model stage under the current span, laid end to end from `started_ns` by the seconds the
    model measured for each (its StageClock): the stages of one job run one after another."""
    at = started_ns
    for stage in STAGE_ORDER:
        seconds = timings.get(stage)
        if seconds is None:
            continue
        end = at + int(seconds * 1e9)
        span = tracer().start_span(f"llada.{stage}", start_time=at, attributes={"llada.seconds": seconds})
        span.end(end_time=end)
        at = end


def trace_id_of(traceparent_value: str | None) -> str:
    """The 32-hex trace id in a traceparent ("00-<trace id>-<span id>-<flags>"); "" without one."""
    parts = (traceparent_value or "").split("-")
    return parts[1] if len(parts) == 4 else ""
