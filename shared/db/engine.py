"""Engines and sessions for Postgres (production) and SQLite (embedded)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str) -> str:
    """Plain `postgresql://` / `postgres://` URLs use psycopg 3, the driver we ship."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


# Connections a pool may open beyond one per thread (a thread that briefly holds two sessions).
POOL_OVERFLOW = 2
# Postgres ends a session left idle inside a transaction this long (idle_in_transaction_session_timeout),
# releasing its locks. Every transaction here is a few statements sent back to back, so only a stalled
# process reaches it: a worker frozen (SIGSTOP, a paused VM) between an UPDATE of its job and the COMMIT would
# otherwise hold that row, and the reaper's take-over of the job would wait for as long as it sleeps. Well
# under the default lease (LLADA_HEARTBEAT_TIMEOUT_S, 60 s).
IDLE_IN_TRANSACTION_TIMEOUT_S = 10.0


def make_engine(url: str, *, threads: int | None = None, sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
                idle_in_transaction_timeout_s: float = IDLE_IN_TRANSACTION_TIMEOUT_S, **kwargs) -> Engine:
    """`threads`: how many threads of the process may use the database at once; the pool keeps one
    connection for each (SQLAlchemy's default of 5 + 10 overflow makes the 16th concurrent caller wait
    `pool_timeout` and fail), and never more, so that replicas × pool stays under the server's limit."""
    url = normalize_url(url)
    parsed = make_url(url)
    if threads is not None:
        kwargs.setdefault("pool_size", threads)
        kwargs.setdefault("max_overflow", POOL_OVERFLOW)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database, sqlite_busy_timeout_ms, **kwargs)
    connect_args = dict(kwargs.pop("connect_args", {}))
    timeout = f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_s * 1000)}"
    connect_args["options"] = f"{connect_args['options']} {timeout}" if connect_args.get("options") else timeout
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)


def _sqlite_engine(url: str, database: str | None, busy_timeout_ms: int, **kwargs) -> Engine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        # Sessions may be used from worker threads (the gateway's executor, heartbeat threads).
        connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
        **kwargs,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL: readers never block the writer, so the gateway can read while a worker writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # BEGIN IMMEDIATE takes the write lock up front. A deferred transaction that reads and then
        # writes fails at once with "database is locked" when another process wrote in between
        # (busy_timeout does not apply to that case); IMMEDIATE waits its turn instead.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: repository functions commit, and callers keep reading the returned Job.
    return sessionmaker(engine, expire_on_commit=False)
