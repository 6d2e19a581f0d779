"""One exception type for every failed call, carrying the gRPC status and the offending field."""

from __future__ import annotations

import grpc

# Trailing-metadata key in which the gateway names the request field that was refused.
ERROR_FIELD_METADATA_KEY = "llada-error-field"


class LladaError(Exception):
    """A call to the server failed: ``code`` is the gRPC status name, ``field`` the refused field (or None)."""

    def __init__(self, code: str, message: str, field: str | None = None):
        self.code = code
        self.message = message
        self.field = field
        super().__init__(f"{code}: {message}")


def _field_from_trailers(trailers) -> str | None:
    for key, value in trailers or ():
        if key == ERROR_FIELD_METADATA_KEY:
            return value
    return None


def from_rpc_error(err: grpc.RpcError) -> LladaError:
    code = err.code() if callable(getattr(err, "code", None)) else None
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    trailers = err.trailing_metadata() if callable(getattr(err, "trailing_metadata", None)) else None
    name = code.name if code is not None else "UNKNOWN"
    return LladaError(name, details or name, _field_from_trailers(trailers))
