"""Alembic migrations of the jobs database (shipped with the package)."""
