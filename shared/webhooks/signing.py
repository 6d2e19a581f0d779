"""The Standard Webhooks signature (standardwebhooks.com), so that receivers can use any verifier library.

A request carries `webhook-id` (the same on every retry of one event), `webhook-timestamp` (Unix seconds of
this try) and `webhook-signature`: `v1,<base64 HMAC-SHA256 over "id.timestamp.body">`, one entry per signing
secret, separated by spaces — during a rotation both the tenant's secrets sign, so a receiver holding either
verifies. A secret is `whsec_` + base64 of its random key bytes; the HMAC key is those bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # 256-bit keys (the scheme asks for 24 to 64 bytes)
SIGNATURE_VERSION = "v1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret; ValueError for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX!r}")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except ValueError:
        raise ValueError("a signing secret is whsec_ followed by base64") from None


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry: HMAC-SHA256 of `id.timestamp.body` under the secret's key."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one delivery try, signed by every secret given (newest first)."""
    if not secrets_:
        raise ValueError("a delivery needs at least one signing secret")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signature(s, msg_id, int(timestamp), body) for s in secrets_),
    }
