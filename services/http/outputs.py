"""A finished job's result bytes, read through the presigned URL the gateway gave (an S3/MinIO http(s) URL, or
the local object store's file:// URL in the embedded stack). Only URLs from the gateway's own answers come here."""

from __future__ import annotations

import asyncio
import mimetypes

from client.results import fetch_url
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


async def read_output(obj: pb.OutputObject) -> bytes:
    try:
        return await asyncio.to_thread(fetch_url, obj.url, FETCH_TIMEOUT_S)
    except OSError as err:
        raise ApiError(502, f"the result object {obj.object_key} could not be read from the object store: {err}",
                       code="unavailable") from None
