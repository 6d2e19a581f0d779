"""``llada-server http`` / ``python -m services.http``: the front door on uvicorn at http_listen, its metrics on
http_metrics_port. On SIGTERM uvicorn stops accepting, lets requests in flight finish for shutdown_grace_s and
closes what is left (an event stream's client reconnects; a waiting OpenAI call's job runs on regardless)."""

from __future__ import annotations

import logging

import uvicorn
from prometheus_client import start_http_server
from pydantic import ValidationError

from services.http.app import create_app
from services.http.metrics import REGISTRY
from shared.logs import configure_logging
from shared.settings import Settings, describe_settings_error, get_settings

SERVICE = "http"
log = logging.getLogger("llada.http")


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def uvicorn_config(settings: Settings, **overrides) -> uvicorn.Config:
    host, port = split_listen(settings.http_listen)
    options = dict(host=host, port=port, log_config=None, access_log=False, proxy_headers=True,
                   timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)), server_header=False)
    return uvicorn.Config(create_app(settings), **{**options, **overrides})


def main() -> None:
    configure_logging(service=SERVICE)
    try:
        settings = get_settings()
    except ValidationError as err:
        log.error("invalid settings: %s", describe_settings_error(err))
        raise SystemExit(2)
    configure_logging(settings, service=SERVICE)
    if settings.http_metrics_port:
        start_http_server(settings.http_metrics_port, addr=split_listen(settings.http_listen)[0], registry=REGISTRY)
    log.info("http front door listening", extra={"listen": settings.http_listen})
    uvicorn.Server(uvicorn_config(settings)).run()
