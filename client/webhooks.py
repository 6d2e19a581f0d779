"""`verify_webhook`: check that a webhook request came from the service, in the Standard Webhooks format.

    from client import verify_webhook, WebhookVerificationError
    job = verify_webhook(os.environ["LLADA_WEBHOOK_SECRET"], request.headers, request.body)

It refuses a request whose signature does not match the secret (`whsec_…`, as the admin command showed it) or
whose `webhook-timestamp` is further than `tolerance` seconds from now (a replayed old request), and returns
the body's JSON (the Job, in the proto's JSON mapping). Pass the body exactly as received: the signature
covers its bytes. Any Standard Webhooks library verifies these requests too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300.0  # the scheme's recommendation: five minutes either way


class WebhookVerificationError(Exception):
    """The request is not a genuine, fresh webhook of the service: do not act on it."""


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    raise WebhookVerificationError(f"missing header {name}")


def _key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ base64 secret") from None


def verify_webhook(secret: str, headers: Mapping[str, str], body: bytes | str, *,
                   tolerance: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> Any:
    """The body's JSON if the request is signed by `secret` and its timestamp is within `tolerance` seconds of
    `now` (default: this machine's clock); else `WebhookVerificationError` saying why."""
    payload = body.encode() if isinstance(body, str) else bytes(body)
    msg_id = _header(headers, "webhook-id")
    stamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time in seconds") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError(f"webhook-timestamp is {now - timestamp:.0f} s from now; the tolerance is "
                                       f"{tolerance:.0f} s")
    content = f"{msg_id}.{timestamp}.".encode() + payload
    expected = base64.b64encode(hmac.new(_key(secret), content, hashlib.sha256).digest()).decode()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return json.loads(payload) if payload else None
    raise WebhookVerificationError("no signature matches the secret")
