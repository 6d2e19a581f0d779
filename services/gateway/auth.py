"""API-key authentication: a server interceptor that resolves ``x-api-key`` metadata to a tenant.

The tenant of the current call is then available to the servicer through ``current_tenant()``.
Health checking and reflection stay open, as load balancers and grpcurl expect.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import logging
import time
from collections.abc import Callable

import grpc

from services.gateway.handlers import aborting_handler, wrap_handler
from services.gateway.ttl_cache import TtlCache
from shared.db.errors import is_transient_db_error
from shared.repository import API_KEY_MAX_CHARS, API_KEY_MIN_CHARS

API_KEY_METADATA_KEY = "x-api-key"
UNAUTHENTICATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Positive lookups are cached briefly so that a busy client does not cost one DB query per call;
# short enough that a revoked key stops working within this many seconds.
KEY_CACHE_TTL_S = 30.0
# Unknown keys are remembered for a few seconds, so a client retrying a wrong key in a loop costs one
# query per few seconds, not one per try; short, so a key created just now works within that time.
UNKNOWN_KEY_CACHE_TTL_S = 5.0
# Both caches are bounded: a caller sending ever new keys cannot grow the gateway's memory.
KEY_CACHE_MAX_ENTRIES = 10_000
LOOKUP_UNAVAILABLE = "API keys cannot be checked right now; retry"

log = logging.getLogger("llada.gateway")
_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("llada_tenant")


def current_tenant() -> str:
    """The tenant the current call authenticated as (set by ApiKeyAuthInterceptor)."""
    return _tenant.get()


class KeyLookupFailed(Exception):
    """The key could not be checked (not: the key is wrong); `code` and `message` are what the caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class ApiKeyAuthInterceptor(grpc.aio.ServerInterceptor):
    """``lookup(plaintext) -> tenant | None`` is blocking (a DB query) and runs in a worker thread.
    ``default_key``/``default_tenant``: the embedded mode's built-in key (Settings.default_api_key)."""

    def __init__(self, lookup: Callable[[str], str | None], *, default_key: str | None = None,
                 default_tenant: str | None = None, cache_ttl_s: float = KEY_CACHE_TTL_S,
                 unknown_ttl_s: float = UNKNOWN_KEY_CACHE_TTL_S, max_entries: int = KEY_CACHE_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):
        self._lookup = lookup
        self._default_key = default_key
        self._default_tenant = default_tenant
        self._known: TtlCache[str] = TtlCache(cache_ttl_s, max_entries, clock)
        self._unknown: TtlCache[bool] = TtlCache(unknown_ttl_s, max_entries, clock)

    async def resolve(self, key: str) -> str | None:
        """The key's tenant, or None for a key that is not (or no longer) valid; raises KeyLookupFailed
        when it cannot be told."""
        if self._default_key and hmac.compare_digest(key.encode(), self._default_key.encode()):
            return self._default_tenant
        if not API_KEY_MIN_CHARS <= len(key) <= API_KEY_MAX_CHARS:
            return None  # no stored key has this length: no query
        digest = hashlib.sha256(key.encode()).hexdigest()  # never keep plaintext keys in memory
        tenant = self._known.get(digest)
        if tenant is not None:
            return tenant
        if self._unknown.get(digest):
            return None
        try:
            tenant = await asyncio.to_thread(self._lookup, key)
        except Exception as err:
            # Never cached, and never shown: the error's text holds the query, the key's hash, the host.
            if is_transient_db_error(err):
                # The driver's own words (host, port) are for the operator; the statement is left out.
                log.warning("API key lookup failed: the database is unavailable: %s", getattr(err, "orig", err))
                raise KeyLookupFailed(grpc.StatusCode.UNAVAILABLE, LOOKUP_UNAVAILABLE) from None
            log.exception("API key lookup failed")
            raise KeyLookupFailed(grpc.StatusCode.INTERNAL, "internal error; the request was not completed") from None
        if tenant is None:
            self._unknown.put(digest, True)
        else:
            self._known.put(digest, tenant)
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
        try:
            tenant = await self.resolve(key)  # a str: only "-bin" metadata keys carry bytes
        except KeyLookupFailed as err:
            return aborting_handler(handler, err.code, err.message)
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
