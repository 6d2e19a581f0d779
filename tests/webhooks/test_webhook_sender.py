"""One webhook try (services.webhooks.sender) against a real receiver on loopback: the status is the answer,
redirects are not followed, a private resolution is refused before any connection, the connection goes to the
address judged (not a second lookup), TLS is verified for the URL's name, and the reply is read no further
than a small limit."""

from __future__ import annotations

import socket
import time

import pytest

from services.webhooks.addresses import AddressPolicy
from services.webhooks.sender import MAX_RESPONSE_BYTES, WebhookSender
from tests.tls_certs import self_signed
from tests.webhooks.receiver import LoopbackReceiver

LOOPBACK = AddressPolicy(["127.0.0.0/8"])
HEADERS = {"webhook-id": "msg_1", "webhook-timestamp": "1", "webhook-signature": "v1,x"}


@pytest.fixture
def receiver():
    r = LoopbackReceiver()
    yield r
    r.close()


def sender(policy=LOOPBACK, **kwargs) -> WebhookSender:
    return WebhookSender(policy, timeout_s=kwargs.pop("timeout_s", 2), **kwargs)


def test_a_2xx_delivers_the_body_and_headers_as_sent(receiver):
    outcome = sender().post(receiver.url("/hook?x=1"), b'{"id": "j"}', HEADERS)
    assert outcome.delivered and outcome.status_code == 204
    [got] = receiver.wait_for(1)
    assert (got.path, got.body, got.headers["content-type"]) == ("/hook?x=1", b'{"id": "j"}', "application/json")
    assert {k: got.headers[k] for k in HEADERS} == HEADERS


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_any_other_status_is_an_error_to_retry(receiver, status):
    receiver.status = status
    outcome = sender().post(receiver.url(), b"{}", HEADERS)
    assert (outcome.delivered, outcome.status_code, outcome.final) == (False, status, False)
    assert outcome.error == f"answered HTTP {status}"


def test_a_redirect_is_not_followed_and_ends_the_delivery(receiver):
    elsewhere = LoopbackReceiver()
    try:
        receiver.status = 307
        receiver.headers_out = {"Location": elsewhere.url()}
        outcome = sender().post(receiver.url(), b"{}", HEADERS)
        assert (outcome.status_code, outcome.final) == (307, True) and "not followed" in outcome.error
        assert len(receiver.wait_for(1)) == 1 and elsewhere.requests == []
    finally:
        elsewhere.close()


def test_an_address_outside_the_policy_is_refused_before_any_connection(receiver):
    outcome = sender(AddressPolicy()).post(receiver.url(host="localhost"), b"{}", HEADERS)
    assert outcome.final and not outcome.delivered and "loopback address" in outcome.error
    assert "LLADA_WEBHOOK_ALLOW_NETWORKS" in outcome.error and receiver.requests == []


def test_one_private_address_among_public_ones_refuses_the_try():
    mixed = sender(AddressPolicy(), resolve_host=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    outcome = mixed.post("https://hooks.example.com/x", b"{}", HEADERS)
    assert outcome.final and "hooks.example.com resolves to 10.1.2.3" in outcome.error


def test_the_connection_goes_to_the_judged_address_with_the_url_host(receiver):
    lookups = []

    def resolve_once(host, port):
        lookups.append(host)
        return ["127.0.0.1"]

    outcome = sender(resolve_host=resolve_once).post(receiver.url(host="hooks.test"), b"{}", HEADERS)
    assert outcome.delivered and lookups == ["hooks.test"]  # looked up once, by us: no second lookup to rebind
    assert receiver.wait_for(1)[0].headers["host"] == f"hooks.test:{receiver.port}"


def test_an_unresolvable_host_is_an_error_to_retry():
    outcome = sender().post("https://no-such-host.invalid/x", b"{}", HEADERS)
    assert not outcome.final and outcome.error.startswith("cannot resolve no-such-host.invalid")


def test_a_receiver_that_is_down_is_an_error_to_retry():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = sender().post(f"http://127.0.0.1:{port}/x", b"{}", HEADERS)
    assert not outcome.delivered and not outcome.final and outcome.status_code == 0 and outcome.error


def test_a_receiver_that_does_not_answer_times_out(receiver):
    receiver.release.clear()
    started = time.monotonic()
    outcome = sender(timeout_s=0.3).post(receiver.url(), b"{}", HEADERS)
    assert not outcome.delivered and "timed out" in outcome.error.lower()
    assert time.monotonic() - started < 3


def test_a_huge_reply_is_not_read(receiver):
    receiver.extra_body = b"x" * (64 * 1024 * 1024)
    started = time.monotonic()
    assert sender().post(receiver.url(), b"{}", HEADERS).delivered
    assert time.monotonic() - started < 3 and MAX_RESPONSE_BYTES < 64 * 1024


def test_https_is_verified_for_the_url_name(tmp_path):
    cert = self_signed(tmp_path, dns_names=("hooks.test",), ips=())
    secure = LoopbackReceiver(cert=cert)
    try:
        pinned = sender(ca_file=str(cert[0]), resolve_host=lambda host, port: ["127.0.0.1"])
        assert pinned.post(secure.url(host="hooks.test", scheme="https"), b"{}", HEADERS).delivered
        wrong_name = pinned.post(secure.url(host="other.test", scheme="https"), b"{}", HEADERS)
        assert not wrong_name.delivered and "SSLError: hostname 'other.test' doesn't match" in wrong_name.error
        untrusted = sender(resolve_host=lambda host, port: ["127.0.0.1"])  # certifi's CAs only
        assert not untrusted.post(secure.url(host="hooks.test", scheme="https"), b"{}", HEADERS).delivered
        assert len(secure.requests) == 1
    finally:
        secure.close()
