"""``python -m services.gateway``: serve JobService on LLADA_GRPC_LISTEN, metrics on LLADA_METRICS_PORT."""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError

from services.gateway.server import serve
from services.gateway.wiring import deps_from_settings
from shared.logs import configure_logging
from shared.settings import describe_settings_error, get_settings
from shared.tracing import setup_tracing

SERVICE = "gateway"


def main() -> None:
    configure_logging(service=SERVICE)  # so that problems reading the settings are logged as JSON too
    log = logging.getLogger("llada.gateway")
    try:
        settings = get_settings()
    except ValidationError as err:
        log.error("invalid settings: %s", describe_settings_error(err))
        raise SystemExit(2)
    configure_logging(settings, service=SERVICE)
    setup_tracing(settings, SERVICE)
    try:
        deps = deps_from_settings(settings)
    except Exception:
        log.exception("gateway failed to start")
        raise SystemExit(1)
    asyncio.run(serve(deps))


if __name__ == "__main__":
    main()
