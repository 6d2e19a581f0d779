"""Which database errors are a passing outage rather than a fault of the request or the job.

A lost connection, a server restarting, an exhausted pool or a statement cancelled by an administrator is
transient: the gateway answers UNAVAILABLE (the client retries), a worker retries its write or leaves the
job to be retried — it never ends a job FAILED, nor shows the SQL to anyone.
"""

from __future__ import annotations

from sqlalchemy import exc


def is_transient_db_error(err: BaseException) -> bool:
    """True for an error that a later try may not meet: connection-level failures and pool timeouts.

    `OperationalError` covers refused and dropped connections, an administrator's terminate or cancel and
    SQLite's "database is locked"; `InterfaceError` a connection already closed under us; `TimeoutError`
    a pool with no free connection; a `DBAPIError` whose connection was invalidated a disconnect noticed
    mid-statement. Integrity and programming errors are not transient: the same statement fails again.
    """
    if isinstance(err, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError, exc.DisconnectionError)):
        return True
    return isinstance(err, exc.DBAPIError) and bool(err.connection_invalidated)
