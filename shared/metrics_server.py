"""Each process's Prometheus endpoint: a registry with the process, platform and GC collectors (memory, CPU,
open files, Python's garbage collector) plus the process's own families, served on its own port (0 = off).

The port is a setting of each process kind (metrics_port for the gateway, worker_metrics_port, reaper_metrics_port,
webhook_metrics_port, http_metrics_port); the embedded stack gives each a free one."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, start_http_server

log = logging.getLogger("llada.metrics")


def process_registry() -> CollectorRegistry:
    from shared.job_metrics import JOBS_FINISHED

    registry = CollectorRegistry(auto_describe=True)
    registry.register(JOBS_FINISHED)  # every process that can end a job counts the jobs it ended
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve_metrics(registry: CollectorRegistry, port: int, host: str) -> bool:
    """Serve ``registry`` on ``host:port`` in a thread. False when off (port 0) or the port is taken: a process
    without its metrics endpoint still does its work (the failure is logged)."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as err:
        log.warning("metrics endpoint not started", extra={"port": port, "error": str(err)})
        return False
    log.info("metrics listening", extra={"port": port})
    return True
