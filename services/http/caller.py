"""Who is calling: the API key from ``Authorization: Bearer …``, and the gateway client that carries it.

The front door keeps no credentials of its own: every gateway call goes out with the caller's key, so the
gateway's tenants, limits and validation apply unchanged (a call without a key is the gateway's to refuse)."""

from __future__ import annotations

from fastapi import Request

from client.async_client import AsyncLladaClient
from services.http.errors import ApiError


def api_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "Authorization: expected 'Bearer <API key>'", param="Authorization",
                       code="unauthenticated")
    if not (key.isascii() and key.isprintable()):  # gRPC metadata carries printable ASCII only: no key is else
        raise ApiError(401, "invalid API key", param="Authorization", code="unauthenticated")
    return key


def gateway(request: Request) -> AsyncLladaClient:
    """A FastAPI dependency: the app's gateway client, sending this caller's key."""
    return request.app.state.gateway.with_api_key(api_key(request))


def idempotency_key(request: Request) -> str:
    """``Idempotency-Key`` is the job's request_id: a retried POST returns the job the first one created."""
    return request.headers.get("idempotency-key", "")
