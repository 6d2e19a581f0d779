"""API-key authentication: a server interceptor that resolves ``x-api-key`` metadata to a tenant.

The tenant of the current call is then available to the servicer through ``current_tenant()``.
Health checking and reflection stay open, as load balancers and grpcurl expect.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import time
from collections.abc import Callable

import grpc

from services.gateway.handlers import aborting_handler, wrap_handler

API_KEY_METADATA_KEY = "x-api-key"
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Positive lookups are cached briefly so that a busy client does not cost one DB query per call;
# short enough that a revoked key stops working within this many seconds.
KEY_CACHE_TTL_S = 30.0

_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("llada_tenant")


def current_tenant() -> str:
    """The tenant the current call authenticated as (set by ApiKeyAuthInterceptor)."""
    return _tenant.get()


class ApiKeyAuthInterceptor(grpc.aio.ServerInterceptor):
    """``lookup(plaintext) -> tenant | None`` is blocking (a DB query) and runs in a worker thread.
    ``default_key``/``default_tenant``: the embedded mode's built-in key (Settings.default_api_key)."""

    def __init__(self, lookup: Callable[[str], str | None], *, default_key: str | None = None,
                 default_tenant: str = "default", cache_ttl_s: float = KEY_CACHE_TTL_S):
        self._lookup = lookup
        self._default_key = default_key
        self._default_tenant = default_tenant
        self._ttl = cache_ttl_s
        self._cache: dict[str, tuple[str, float]] = {}

    async def _resolve(self, key: str) -> str | None:
        if self._default_key and hmac.compare_digest(key.encode(), self._default_key.encode()):
            return self._default_tenant
        digest = hashlib.sha256(key.encode()).hexdigest()  # never keep plaintext keys in memory
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and cached[1] > now:
            return cached[0]
        tenant = await asyncio.to_thread(self._lookup, key)
        if tenant is not None:
            self._cache[digest] = (tenant, now + self._ttl)
        return tenant

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(UNAUTHENTICATED_PREFIXES):
            return handler
        key = next((v for k, v in handler_call_details.invocation_metadata or () if k == API_KEY_METADATA_KEY),
                   None)
        if not key:
            return aborting_handler(handler, grpc.StatusCode.UNAUTHENTICATED,
                                    f"missing API key (call metadata {API_KEY_METADATA_KEY!r})")
        tenant = await self._resolve(key if isinstance(key, str) else key.decode())
        if tenant is None:
            return aborting_handler(handler, grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        return _with_tenant(handler, tenant)


def _with_tenant(handler: grpc.RpcMethodHandler, tenant: str) -> grpc.RpcMethodHandler:
    def unary(behaviour):
        async def call(request, context):
            _tenant.set(tenant)
            return await behaviour(request, context)
        return call

    def streaming(behaviour):
        async def call(request, context):
            _tenant.set(tenant)
            async for item in behaviour(request, context):
                yield item
        return call

    return wrap_handler(handler, unary=unary, streaming=streaming)
