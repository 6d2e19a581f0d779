"""Builds and runs the gateway's grpc.aio server: JobService + health + reflection, interceptors,
message-size limits, TLS, metrics endpoint and graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server
from sqlalchemy import func, select

from services.gateway.auth import ApiKeyAuthInterceptor
from services.gateway.metrics import GatewayMetrics, JobsByStateCollector, MetricsInterceptor
from services.gateway.servicer import GatewayDeps, JobServicer
from shared import repository as repo
from shared.db.models import Job
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc
from shared.metrics_server import process_registry
from shared.settings import Settings

log = logging.getLogger("llada.gateway")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["JobService"].full_name
# Threads for the blocking work of the RPCs (database, object store, image decoding): asyncio's default of
# cpu+4 would make every call queue behind a handful of threads.
BLOCKING_THREADS = 32
# HTTP/2 keepalive pings keep long WatchJob streams alive through proxies and notice dead peers.
KEEPALIVE_OPTIONS = [("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000),
                     ("grpc.http2.min_ping_interval_without_data_ms", 30_000)]


def tls_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return grpc.ssl_server_credentials([(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())])


def tenant_lookup(deps: GatewayDeps):
    def lookup(plaintext: str) -> str | None:
        with deps.sessions() as s:
            return repo.tenant_for_api_key(s, plaintext)
    return lookup


def jobs_by_state(deps: GatewayDeps):
    def count() -> dict[str, int]:
        with deps.sessions() as s:
            return {state: n for state, n in s.execute(select(Job.state, func.count()).group_by(Job.state))}
    return count


@dataclass
class RunningGateway:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    metrics: GatewayMetrics
    servicer: JobServicer

    async def stop(self, grace: float | None = None) -> None:
        """``grace``: seconds the unary calls in flight get to finish (default settings.shutdown_grace_s;
        0 cancels them at once)."""
        if grace is None:
            grace = self.servicer.settings.shutdown_grace_s
        # Tell load balancers first, end the open watches (clients resume elsewhere), then let the
        # unary calls in flight finish.
        await self.health.enter_graceful_shutdown()
        self.servicer.closing.set()
        await self.server.stop(grace)
        await self.servicer.aclose()


async def start_gateway(deps: GatewayDeps, *, listen: str | None = None,
                        registry: CollectorRegistry | None = None) -> RunningGateway:
    """Starts serving on ``listen`` (default: settings.grpc_listen; port 0 picks a free one)."""
    settings = deps.settings
    metrics = GatewayMetrics(registry if registry is not None else CollectorRegistry())
    metrics.registry.register(JobsByStateCollector(jobs_by_state(deps)))
    default_key = settings.default_api_key.get_secret_value() if settings.default_api_key else None
    auth = ApiKeyAuthInterceptor(tenant_lookup(deps), default_key=default_key,
                                 default_tenant=settings.default_tenant)
    limits = [("grpc.max_receive_message_length", settings.max_message_bytes),
              ("grpc.max_send_message_length", settings.max_message_bytes)]
    # Metrics outermost, so refused (unauthenticated) calls are counted too.
    # maximum_concurrent_rpcs: beyond it gRPC answers RESOURCE_EXHAUSTED itself, so the process's memory
    # and event loop stay bounded whatever its callers do (open watches are capped per tenant too).
    server = grpc.aio.server(interceptors=[MetricsInterceptor(metrics), auth], options=limits + KEEPALIVE_OPTIONS,
                             maximum_concurrent_rpcs=settings.max_concurrent_rpcs)
    servicer = JobServicer(deps)
    pb_grpc.add_JobServiceServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection([SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                         reflection.SERVICE_NAME], server)
    address = listen or settings.grpc_listen
    credentials = tls_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("gateway listening", extra={"address": address, "port": port, "tls": credentials is not None})
    return RunningGateway(server, port, health, metrics, servicer)


async def serve(deps: GatewayDeps) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully."""
    settings = deps.settings
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="gateway"))
    registry = process_registry()  # with the process, platform and GC collectors
    gateway = await start_gateway(deps, registry=registry)
    if settings.metrics_port:
        host = settings.grpc_listen.rsplit(":", 1)[0].strip("[]") or "0.0.0.0"
        start_http_server(settings.metrics_port, addr=host, registry=registry)
        log.info("metrics listening", extra={"port": settings.metrics_port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": settings.shutdown_grace_s})
    await gateway.stop(settings.shutdown_grace_s)
    log.info("stopped")
