"""API keys are revoked by id or prefix, never by the key itself; an ambiguous prefix is refused rather than
guessed; prefixes compare exactly (case included) on SQLite and Postgres alike."""

import pytest

from shared import repository as repo
from shared.jobs import InvalidArgument

SHARED = "llada_shared"  # 12 characters: two keys with this start have the same stored prefix


def refused(s, ref) -> str:
    with pytest.raises(InvalidArgument) as info:
        repo.revoke_api_key(s, ref)
    assert info.value.field == "key"
    return info.value.message


def test_revoke_by_id_or_by_prefix(s):
    first, second = repo.create_api_key(s, "acme"), repo.create_api_key(s, "acme")
    ids = [k.id for k in repo.list_api_keys(s)]
    assert repo.revoke_api_key(s, str(ids[0])).id == ids[0]
    assert repo.tenant_for_api_key(s, first) is None and repo.tenant_for_api_key(s, second) == "acme"
    assert repo.revoke_api_key(s, str(ids[0])) is None  # no longer active
    assert repo.revoke_api_key(s, second[:repo.API_KEY_PREFIX_CHARS]).id == ids[1]
    assert repo.tenant_for_api_key(s, second) is None
    listed = repo.list_api_keys(s, "acme")
    assert [k.revoked_at is not None for k in listed] == [True, True]
    assert all(k.key_prefix in (first[:12], second[:12]) for k in listed)


def test_an_ambiguous_prefix_or_the_key_itself_is_refused(s):
    a, b = SHARED + "-A" * 10, SHARED + "-B" * 10
    repo.register_api_key(s, "acme", a)
    repo.register_api_key(s, "other", b)
    message = refused(s, SHARED[:9])
    assert "matches 2 active keys" in message
    refused(s, SHARED)  # the whole stored prefix: still two keys
    assert "never the key itself" in refused(s, a)
    assert repo.tenant_for_api_key(s, a) == "acme" and repo.tenant_for_api_key(s, b) == "other"
    refused(s, "   ")
    # Exact comparison: another case is another prefix (SQLite's LIKE would ignore it).
    assert repo.revoke_api_key(s, SHARED.upper()) is None


def test_an_id_outside_the_integer_range_is_no_match(s):
    repo.create_api_key(s, "acme")
    assert repo.revoke_api_key(s, "99999999999") is None


def test_tenants_are_bounded(s):
    for tenant in ("", "a\x00b", "t" * 129):
        with pytest.raises(InvalidArgument) as info:
            repo.create_api_key(s, tenant)
        assert info.value.field == "tenant"


def test_registered_keys_have_the_lengths_the_gateway_looks_up(s):
    for key in ("short", "k" * (repo.API_KEY_MAX_CHARS + 1)):
        with pytest.raises(InvalidArgument) as info:
            repo.register_api_key(s, "acme", key)
        assert info.value.field == "api_key"
    repo.register_api_key(s, "acme", "k" * repo.API_KEY_MAX_CHARS)
