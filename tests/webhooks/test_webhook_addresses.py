"""Where a webhook may go (services.webhooks.addresses): public addresses, and the networks the operator allows."""

from __future__ import annotations

import pytest

from services.webhooks.addresses import AddressPolicy, resolve

REFUSED = {
    "127.0.0.1": "loopback", "127.8.9.10": "loopback", "::1": "loopback", "::ffff:127.0.0.1": "loopback",
    "10.0.0.5": "private", "172.16.3.4": "private", "192.168.1.1": "private", "fd00:ec2::254": "private",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "100.100.100.200": "not a public",
    "0.0.0.0": "unspecified", "224.0.0.1": "multicast", "ff02::1": "multicast", "240.0.0.1": "reserved",
}


@pytest.mark.parametrize("address, kind", REFUSED.items())
def test_non_public_addresses_are_refused_saying_what_they_are(address, kind):
    why = AddressPolicy().refusal(address)
    assert why is not None and why.startswith(address) and kind in why


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert AddressPolicy().refusal(address) is None


def test_an_allowed_network_opens_exactly_that_network():
    policy = AddressPolicy(["127.0.0.0/8", "fd00::/8"])
    assert policy.refusal("127.0.0.1") is None and policy.refusal("::ffff:127.0.0.1") is None
    assert policy.refusal("fd00:ec2::254") is None
    assert policy.refusal("10.0.0.1") is not None and policy.refusal("169.254.169.254") is not None


def test_a_malformed_network_is_refused():
    with pytest.raises(ValueError, match="not-a-cidr"):
        AddressPolicy(["not-a-cidr"])


def test_resolve_gives_each_address_once():
    assert resolve("127.0.0.1", 80) == ["127.0.0.1"]
    assert "127.0.0.1" in resolve("localhost", 80) or "::1" in resolve("localhost", 80)
