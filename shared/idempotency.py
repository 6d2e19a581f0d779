"""What makes two submits "the same request" for a client request id (an idempotency key).

A repeated `request_id` returns the tenant's existing job only if it asks for the same thing: the same
kind, the same parameters once validated (defaults filled in, so leaving a parameter out and sending its
default are the same) and the same input image bytes. Anything else reusing the id is refused
(`repository.RequestIdReused`, ALREADY_EXISTS at the gateway), as payment APIs treat idempotency keys:
answering with a job that computes something else would be a silent wrong result. Priority is not part of
it: it says when a job runs, not what it computes.

The fingerprint is stored on the job (`jobs.request_fingerprint`). Changing how it is computed makes a
retry that spans the change look like another request: do it only together with a migration that clears
the stored ones (a job without a fingerprint answers any retry, as before migration 0003).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from shared.jobs import JobKind


def request_fingerprint(kind: JobKind | str, params: Mapping[str, Any], inputs: Mapping[str, bytes]) -> str:
    """SHA-256 hex of the kind, the validated params (as stored: `model_dump(mode="json")`) and the
    SHA-256 of each input object's bytes, by input name."""
    canonical = json.dumps({
        "kind": JobKind(kind).value,
        "params": params,
        "inputs": {name: hashlib.sha256(data).hexdigest() for name, data in inputs.items()},
    }, sort_keys=True, separators=(",", ":"), allow_nan=False)  # ASCII-only: json.dumps's default
    return hashlib.sha256(canonical.encode()).hexdigest()
