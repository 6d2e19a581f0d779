"""Structured logs for every llada-serve process: one JSON object per line on stderr.

    from shared.logs import configure_logging
    configure_logging(settings, service="gateway")     # level from LLADA_LOG_LEVEL
    log.info("job submitted", extra={"job_id": job.id})
    → {"ts": "…", "level": "info", "logger": "llada.gateway", "msg": "job submitted", "service": "gateway", "job_id": "…"}

Fields passed with ``extra={...}`` become fields of the line, so logs can be filtered by job_id or tenant
without parsing messages. ``service`` names the process kind when logs of several processes are merged.
`LLADA_LOG_FORMAT=text` gives plain lines instead (time, level, logger, message, then the fields as key=value).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """A record → one JSON line; ``static`` fields (e.g. the service name) go on every line."""

    def __init__(self, static: dict[str, object] | None = None):
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.static,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that JSON cannot encode (a Path, a datetime) is logged as its text, not lost.
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """A record → one plain line, its ``extra`` fields appended as key=value."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        line = super().format(record)
        return f"{line} {fields}" if fields else line


def json_handler(*, service: str | None = None, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter({"service": service} if service else None))
    return handler


def text_handler(*, stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(TextFormatter())
    return handler


def configure_logging(settings=None, *, service: str | None = None, level: int | str | None = None,
                      stream: IO[str] | None = None) -> None:
    """Route every logger through one handler on the root logger (replacing its handlers): JSON lines, or
    text ones when ``settings.log_format`` says so.

    The level is ``level`` if given, else ``settings.log_level``, else INFO. Safe to call again, e.g.
    once with defaults before the settings are read (so their warnings are JSON too) and once after.
    """
    if level is None:
        level = settings.log_level if settings is not None else logging.INFO
    text = settings is not None and settings.log_format == "text"
    root = logging.getLogger()
    root.handlers[:] = [text_handler(stream=stream) if text else json_handler(service=service, stream=stream)]
    root.setLevel(level.upper() if isinstance(level, str) else level)
