"""Wake the dispatcher the moment a webhook event commits, on PostgreSQL: the outbox sends
`NOTIFY llada_webhooks` in the transaction that writes a row (shared.webhooks.outbox), which Postgres delivers
at commit. Without it (SQLite, or while the listening connection is down) the dispatcher finds new rows by
polling every `webhook_poll_interval_s`; a lost notification only costs that poll."""

from __future__ import annotations

import logging
import threading

import psycopg
from sqlalchemy.engine import make_url

from shared.webhooks.outbox import NOTIFY_CHANNEL

log = logging.getLogger("llada.webhooks")
RECONNECT_S = 2.0


def libpq_url(database_url: str) -> str | None:
    """The plain libpq URL of a PostgreSQL SQLAlchemy URL; None for another database."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def listen(database_url: str, wake: threading.Event, stop: threading.Event) -> threading.Thread | None:
    """A daemon thread that sets `wake` on each notification until `stop`; None where there is nothing to
    listen to (not PostgreSQL)."""
    url = libpq_url(database_url)
    if url is None:
        return None
    thread = threading.Thread(target=_listen, args=(url, wake, stop), name="webhook-wakeup", daemon=True)
    thread.start()
    return thread


def _listen(url: str, wake: threading.Event, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                wake.set()  # rows may have come while it was not listening
                while not stop.is_set():
                    for _ in conn.notifies(timeout=1.0):
                        wake.set()
        except psycopg.Error as err:
            log.warning("webhook wake-up connection lost; polling meanwhile", extra={"error": str(err)})
            stop.wait(RECONNECT_S)
