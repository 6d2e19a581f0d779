"""Alembic environment: the URL comes from the caller (shared.db.migrate.upgrade), not an ini file."""

from __future__ import annotations

import os

from alembic import context

from shared.db.engine import make_engine
from shared.db.models import Base

# Arbitrary constant naming our advisory lock ("llada" in ASCII).
MIGRATION_LOCK_ID = 0x6C6C616461

config = context.config
url = config.attributes.get("database_url") or os.environ.get("LLADA_DATABASE_URL")
if not url:
    raise RuntimeError("no database URL: call shared.db.upgrade(url) or set LLADA_DATABASE_URL")

engine = make_engine(url)
try:
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Several services may start at once and all upgrade: let one migrate, the rest wait
                # and then find the schema current. (SQLite gets the same from BEGIN IMMEDIATE.)
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            context.run_migrations()
finally:
    engine.dispose()
