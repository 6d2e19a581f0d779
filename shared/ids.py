"""The form of the identifiers a caller sends: job ids and client request ids.

Checked before they reach a query, so a malformed value is `InvalidArgument` naming the field and never a
database error (Postgres refuses a NUL in text with an error of its own; an overlong value would only be
truncated or refused by the column).
"""

from __future__ import annotations

import re

from shared.jobs import InvalidArgument

# Job ids are uuid4 strings made by the service (shared.db.models.new_job_id); any UUID's 8-4-4-4-12 hex
# form is accepted, in either case, and compared in the lowercase the service writes.
_UUID_FORM = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The width of jobs.request_id.
MAX_REQUEST_ID_CHARS = 128


def validate_job_id(value: str, field: str = "job_id") -> str:
    """The job id in the form the service stores it; `InvalidArgument(field)` if it is not one."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not isinstance(value, str) or not _UUID_FORM.fullmatch(value):
        # The value is not repeated: it may be long or hold characters that spoil a log line.
        raise InvalidArgument(field, "is not a job id (a UUID such as 3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f)")
    return value.lower()


def validate_request_id(value: str | None) -> str | None:
    """A client request id: None when empty, else at most 128 printable characters."""
    if not value:
        return None
    if len(value) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument("request_id", f"is longer than {MAX_REQUEST_ID_CHARS} characters")
    if not value.isprintable():
        raise InvalidArgument("request_id", "must contain printable characters only (no control characters)")
    return value
