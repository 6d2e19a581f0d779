"""The database's clock, as SQL expressions: heartbeats and their staleness are judged by one clock.

Each process has its own clock, and they drift (or jump: a VM restored from a snapshot, NTP stepping).
A lease judged by the writer's clock against the reaper's can expire early or never; `db_now()` in the
statement itself makes both sides read the same clock (ARCHITECTURE §3).

Postgres: `statement_timestamp()` (not `now()`, which is the transaction's start). SQLite: `strftime`
with milliseconds, rendered in the layout SQLAlchemy stores datetimes in (naive UTC,
`YYYY-MM-DD HH:MM:SS.ffffff`), so comparisons with stored values are correct as strings.
"""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from shared.db.types import UTCDateTime


class db_now(FunctionElement):
    """The database's current time, minus `seconds_ago` (a float, bound as a parameter)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds_ago: float = 0.0):
        super().__init__(bindparam(None, float(seconds_ago), unique=True))


@compiles(db_now)
def _default(element, compiler, **kw):  # Postgres and any other backend with intervals
    (seconds,) = element.clauses
    return f"(statement_timestamp() - {compiler.process(seconds, **kw)} * interval '1 second')"


@compiles(db_now, "sqlite")
def _sqlite(element, compiler, **kw):
    (seconds,) = element.clauses
    # A modifier like '-60.5 seconds'; %f gives SS.SSS, padded to microseconds as SQLAlchemy stores them.
    modifier = f"(-({compiler.process(seconds, **kw)}) || ' seconds')"
    return f"(strftime('%Y-%m-%d %H:%M:%f', 'now', {modifier}) || '000')"
