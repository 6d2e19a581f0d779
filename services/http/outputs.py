"""A finished job's result bytes, read through the presigned URL the gateway gave (an S3/MinIO http(s) URL, or
the local object store's file:// URL in the embedded stack). Only URLs from the gateway's own answers come here.

Where the URLs' public host is not reachable from the front door (compose: they name localhost:9000),
http_object_store_address says where to dial instead; the request keeps the URL's Host header, which the
signature covers, so the object store accepts it as signed."""

from __future__ import annotations

import asyncio
import mimetypes
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from services.http.errors import ApiError
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

# A download is one object of at most a few MiB from the store next door.
FETCH_TIMEOUT_S = 60.0


def output_object(job: pb.Job, name: str = "image") -> pb.OutputObject:
    for obj in job.outputs.objects:
        if obj.name == name:
            return obj
    names = ", ".join(o.name for o in job.outputs.objects) or "none"
    raise ApiError(404, f"name: job {job.id} has no output {name!r} (it has: {names})", param="name")


def media_type(obj: pb.OutputObject) -> str:
    return mimetypes.guess_type(obj.object_key or obj.name)[0] or "application/octet-stream"


def object_request(url: str, dial: str | None) -> urllib.request.Request:
    """The GET for ``url``, sent to ``dial`` (host:port) instead of its own host when given."""
    parts = urlsplit(url)
    if dial is None or parts.scheme not in ("http", "https"):
        return urllib.request.Request(url)
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=dial)))
    request.add_header("Host", parts.netloc)
    return request


def fetch(url: str, dial: str | None = None, timeout: float = FETCH_TIMEOUT_S) -> bytes:
    with urllib.request.urlopen(object_request(url, dial), timeout=timeout) as response:
        return response.read()


async def read_output(obj: pb.OutputObject, dial: str | None = None) -> bytes:
    try:
        return await asyncio.to_thread(fetch, obj.url, dial)
    except OSError as err:
        raise ApiError(502, f"the result object {obj.object_key} could not be read from the object store: {err}",
                       code="unavailable") from None
