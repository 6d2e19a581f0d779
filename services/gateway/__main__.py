"""``python -m services.gateway``: serve JobService on LLADA_GRPC_LISTEN, metrics on LLADA_METRICS_PORT."""

from __future__ import annotations

import asyncio
import logging
import os

from services.gateway.logs import configure_json_logging
from services.gateway.server import serve
from services.gateway.wiring import deps_from_settings
from shared.settings import get_settings


def main() -> None:
    configure_json_logging(os.environ.get("LLADA_LOG_LEVEL", "INFO"))
    settings = get_settings()
    try:
        deps = deps_from_settings(settings)
    except Exception:
        logging.getLogger("llada.gateway").exception("gateway failed to start")
        raise SystemExit(1)
    asyncio.run(serve(deps))


if __name__ == "__main__":
    main()
