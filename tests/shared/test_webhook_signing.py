"""Webhook signatures in the Standard Webhooks format: what the service signs verifies with the SDK helper, with
the `standardwebhooks` library receivers use, and with the scheme written out here from its specification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError as LibraryVerificationError

from client import WebhookVerificationError, verify_webhook
from shared.webhooks.signing import SECRET_PREFIX, new_secret, secret_key, signed_headers

BODY = json.dumps({"id": "job-1", "state": "JOB_STATE_SUCCEEDED"}).encode()
NOW = 1_800_000_000


def scheme_signatures(secret: str, headers: dict, body: bytes) -> set[str]:
    """The scheme by hand: base64(HMAC-SHA256(base64decode(secret without whsec_), "id.timestamp.body"))."""
    key = base64.b64decode(secret[len("whsec_"):])
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}".encode()
    return {base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()}


def test_a_new_secret_is_whsec_and_32_random_bytes():
    first, second = new_secret(), new_secret()
    assert first.startswith(SECRET_PREFIX) and first != second and len(secret_key(first)) == 32


def test_the_signature_verifies_three_ways():
    secret = new_secret()
    headers = signed_headers([secret], "msg_1", NOW, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert verify_webhook(secret, headers, BODY, now=NOW) == json.loads(BODY)
    assert {entry.split(",", 1)[1] for entry in headers["webhook-signature"].split()} == \
        scheme_signatures(secret, headers, BODY)
    library = Webhook(secret)
    with pytest.raises(LibraryVerificationError):  # the library judges freshness by its own clock: NOW is past
        library.verify(BODY, headers)
    fresh = signed_headers([secret], "msg_1", int(datetime.now(timezone.utc).timestamp()), BODY)
    assert library.verify(BODY, fresh) == json.loads(BODY)
    assert library.sign("msg_1", datetime.fromtimestamp(NOW, timezone.utc), BODY) == headers["webhook-signature"]


def test_during_a_rotation_either_secret_verifies():
    old, new = new_secret(), new_secret()
    headers = signed_headers([new, old], "msg_2", NOW, BODY)
    assert len(headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        assert verify_webhook(secret, headers, BODY, now=NOW)["id"] == "job-1"
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(new_secret(), headers, BODY, now=NOW)


@pytest.mark.parametrize("offset, ok", [(300, True), (301, False), (-300, True), (-301, False)])
def test_the_timestamp_must_be_within_the_tolerance_either_way(offset, ok):
    secret = new_secret()
    headers = signed_headers([secret], "msg_3", NOW, BODY)
    if ok:
        verify_webhook(secret, headers, BODY, now=NOW + offset, tolerance=300)
    else:
        with pytest.raises(WebhookVerificationError, match="tolerance is 300 s"):
            verify_webhook(secret, headers, BODY, now=NOW + offset, tolerance=300)


@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "signature", "missing header"])
def test_any_change_to_a_signed_request_is_refused(tamper):
    secret = new_secret()
    headers = signed_headers([secret], "msg_4", NOW, BODY)
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"SUCCEEDED", b"FAILED")
    elif tamper == "id":
        headers["webhook-id"] = "msg_5"
    elif tamper == "timestamp":
        headers["webhook-timestamp"] = str(NOW + 1)
    elif tamper == "signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    else:
        del headers["webhook-signature"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body, now=NOW)


def test_headers_are_matched_whatever_their_case():
    secret = new_secret()
    headers = {k.title(): v for k, v in signed_headers([secret], "msg_6", NOW, BODY).items()}
    assert verify_webhook(secret, headers, BODY.decode(), now=NOW)["state"] == "JOB_STATE_SUCCEEDED"


def test_nothing_is_signed_without_a_secret_and_a_malformed_secret_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        signed_headers([], "msg_7", NOW, BODY)
    with pytest.raises(ValueError, match="whsec_"):
        signed_headers(["not-a-secret"], "msg_7", NOW, BODY)
