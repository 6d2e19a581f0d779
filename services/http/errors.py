"""One error shape for every route, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

``param`` names the offending request field (the gateway's own field name, or the HTTP body's), ``code`` is
the gateway's status in lower case (``invalid_argument``, ``not_found``, …), ``type`` OpenAI's class of error.
"""

from __future__ import annotations

import json
import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from client.errors import LladaError

# gRPC status → HTTP status, as Google's own HTTP/JSON mapping of gRPC does (google.rpc.Code).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}
# HTTP status → OpenAI's error type (what its client turns into BadRequestError, RateLimitError, …).
OPENAI_TYPE = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 409: "conflict_error", 413: "invalid_request_error",
               415: "invalid_request_error", 429: "rate_limit_error"}
log = logging.getLogger("llada.http")

# Statuses worth a retry: the caller is told when (the gateway's queue limits and outages are short-lived).
RETRY_AFTER_S = {429: 1, 503: 1}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.code = code or _default_code(status)
        self.headers = headers or {}

    @classmethod
    def from_llada(cls, err: LladaError) -> "ApiError":
        return cls(HTTP_STATUS.get(err.code, 500), err.message, param=err.field, code=err.code.lower())


def _default_code(status: int) -> str:
    inverse = {400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "request_too_large", 415: "unsupported_media_type",
               429: "resource_exhausted", 503: "unavailable", 504: "deadline_exceeded"}
    return inverse.get(status, "internal")


def error_body(status: int, message: str, param: str | None, code: str) -> dict:
    return {"error": {"message": message, "type": OPENAI_TYPE.get(status, "api_error"), "param": param,
                      "code": code}}


def error_json(err: ApiError) -> str:
    """The body of an error told inside an event stream (its status line was already 200)."""
    return json.dumps(error_body(err.status, err.message, err.param, err.code))


def error_response(err: ApiError) -> JSONResponse:
    headers = dict(err.headers)
    if err.status in RETRY_AFTER_S:
        headers.setdefault("Retry-After", str(RETRY_AFTER_S[err.status]))
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), status_code=err.status,
                        headers=headers)


def field_path(loc: tuple) -> str | None:
    """FastAPI's error location → a field path: ("body", "messages", 0, "content") → "messages[0].content"."""
    parts = [part for part in loc if part not in ("body", "query", "path", "header", "form")]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


def validation_message(error: dict, param: str | None) -> str:
    if error.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    if error.get("type") == "missing":
        return f"{param}: required"
    return f"{param}: {error.get('msg', 'invalid')}" if param else error.get("msg", "invalid request")


async def handle_api_error(request: Request, err: ApiError) -> JSONResponse:
    return error_response(err)


async def handle_llada_error(request: Request, err: LladaError) -> JSONResponse:
    return error_response(ApiError.from_llada(err))


async def handle_validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    # OpenAI answers 400 (not FastAPI's 422) and names the first offending parameter.
    first = err.errors()[0] if err.errors() else {}
    param = field_path(tuple(first.get("loc", ())))
    return error_response(ApiError(400, validation_message(first, param), param=param))


async def handle_http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    return error_response(ApiError(err.status_code, str(err.detail), headers=getattr(err, "headers", None)))


async def handle_unexpected(request: Request, err: Exception) -> JSONResponse:
    # The cause stays in the log; the caller gets the same shape as every other error, and nothing internal.
    log.exception("unexpected error", extra={"path": request.url.path})
    return error_response(ApiError(500, "internal error; see the service's log", code="internal"))


def install(app) -> None:
    app.add_exception_handler(Exception, handle_unexpected)
    app.add_exception_handler(ApiError, handle_api_error)
    app.add_exception_handler(LladaError, handle_llada_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_error)
