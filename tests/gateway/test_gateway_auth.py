"""The API-key interceptor's lookups: known keys cached for the TTL (a revoked key stops working within
it), unknown keys cached briefly and boundedly, a failed lookup never cached and answered UNAVAILABLE
(database down) or INTERNAL, with a message that says nothing more. The clock is a test double."""

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from services.gateway.auth import ApiKeyAuthInterceptor, KeyLookupFailed
from services.gateway.server import tenant_lookup
from shared import repository as repo
from shared.repository import API_KEY_MAX_CHARS, API_KEY_MIN_CHARS
from shared.db import make_engine, session_factory, upgrade


class ClockDouble:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLookup:
    """The gateway's real lookup (server.tenant_lookup) on a SQLite database, counting its calls."""

    def __init__(self, sessions):
        self.real = tenant_lookup(SimpleNamespace(sessions=sessions))
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self, key: str):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.real(key)


@pytest.fixture
def sessions(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def clock():
    return ClockDouble()


@pytest.fixture
def lookup(sessions):
    return CountingLookup(sessions)


def interceptor(lookup, clock, **kw) -> ApiKeyAuthInterceptor:
    return ApiKeyAuthInterceptor(lookup, cache_ttl_s=30, unknown_ttl_s=5, clock=clock, **kw)


def resolve(auth, key):
    return asyncio.run(auth.resolve(key))


def test_the_embedded_default_key_is_its_tenant_without_a_query_and_a_near_miss_is_not(lookup, clock):
    auth = interceptor(lookup, clock, default_key="llada_embedded-default-0123456789", default_tenant="acme")
    assert resolve(auth, "llada_embedded-default-0123456789") == "acme"
    assert lookup.calls == 0
    assert resolve(auth, "llada_embedded-default-0123456788") is None  # one character off: looked up, unknown
    assert lookup.calls == 1


def test_a_revoked_key_stops_working_within_the_cache_ttl(sessions, lookup, clock):
    auth = interceptor(lookup, clock)
    with sessions() as s:
        key = repo.create_api_key(s, "acme")
    assert resolve(auth, key) == "acme"
    with sessions() as s:
        assert repo.revoke_api_key(s, key[:repo.API_KEY_PREFIX_CHARS]) is not None
    clock.now += 29
    assert resolve(auth, key) == "acme"  # still cached: the documented window
    assert lookup.calls == 1
    clock.now += 2
    assert resolve(auth, key) is None  # looked up again after the TTL: revoked
    assert lookup.calls == 2


def test_an_unknown_key_costs_one_query_per_few_seconds_not_one_per_try(sessions, lookup, clock):
    auth = interceptor(lookup, clock)
    wrong = "llada_" + "guess" * 8
    for _ in range(50):
        assert resolve(auth, wrong) is None
    assert lookup.calls == 1
    clock.now += 6
    assert resolve(auth, wrong) is None
    assert lookup.calls == 2
    # Keys no stored key could be (too short, too long) cost no query at all.
    for odd in ("short", "x" * 5000):
        assert resolve(auth, odd) is None
    assert lookup.calls == 2


def test_a_key_registered_after_a_miss_works_once_the_miss_expires(sessions, lookup, clock):
    auth = interceptor(lookup, clock)
    key = "llada_" + "n" * 40
    assert resolve(auth, key) is None
    with sessions() as s:
        repo.register_api_key(s, "acme", key)
    assert resolve(auth, key) is None  # the miss is remembered for a few seconds
    clock.now += 6
    assert resolve(auth, key) == "acme"


def test_only_keys_of_a_length_a_stored_key_may_have_cost_a_query(lookup, clock):
    auth = interceptor(lookup, clock)
    for length, queried in [(API_KEY_MIN_CHARS - 1, 0), (API_KEY_MIN_CHARS, 1), (API_KEY_MAX_CHARS, 2),
                            (API_KEY_MAX_CHARS + 1, 2)]:
        assert resolve(auth, "k" * length) is None
        assert lookup.calls == queried, length


def test_the_caches_are_bounded(lookup, clock):
    auth = interceptor(lookup, clock, max_entries=3)
    for n in range(100):
        assert resolve(auth, f"llada_guess-{n:020d}") is None
    assert len(auth._unknown) == 3 and lookup.calls == 100


MESSAGES = {grpc.StatusCode.UNAVAILABLE: "API keys cannot be checked right now; retry",
            grpc.StatusCode.INTERNAL: "internal error; the request was not completed"}


@pytest.mark.parametrize("error, code", [
    (OperationalError("SELECT api_keys.tenant FROM api_keys WHERE api_keys.key_hash = %(h)s",
                      {"h": "ab" * 32}, Exception('connection to server at "db.internal" (10.0.0.5), port 5432 '
                                                 "failed: Connection refused")),
     grpc.StatusCode.UNAVAILABLE),
    (ProgrammingError("SELECT api_keys.tenant FROM api_keys", {"h": "ab" * 32},
                      Exception('relation "api_keys" does not exist')),
     grpc.StatusCode.INTERNAL),
], ids=["database down", "not a passing outage"])
def test_a_failed_lookup_is_answered_generically_and_never_cached(lookup, clock, error, code):
    auth = interceptor(lookup, clock)
    lookup.error = error
    key = "llada_" + "k" * 40
    for _ in range(2):
        with pytest.raises(KeyLookupFailed) as failed:
            resolve(auth, key)
        assert (failed.value.code, failed.value.message) == (code, MESSAGES[code])
        for leak in ("SELECT", "api_keys", "ab" * 32, "db.internal", "10.0.0.5", "5432", "refused", "relation"):
            assert leak not in failed.value.message
    assert lookup.calls == 2  # the failure was not remembered
    lookup.error = None
    assert resolve(auth, key) is None
