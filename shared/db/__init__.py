"""The jobs database: models, engines/sessions and migrations."""

from shared.db.engine import make_engine, normalize_url, session_factory
from shared.db.migrate import upgrade
from shared.db.models import ApiKey, Base, Job

__all__ = ["ApiKey", "Base", "Job", "make_engine", "normalize_url", "session_factory", "upgrade"]
