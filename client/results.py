"""Downloads a finished job's result objects through their presigned URLs."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path, PurePosixPath

from shared.proto.llada.serve.v1 import jobs_pb2 as pb

DOWNLOAD_TIMEOUT_S = 60.0


def fetch_url(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
    # urllib handles both the http(s) URLs of S3/MinIO and the file:// URLs of the local object store.
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def download_outputs(job: pb.Job, dest: str | os.PathLike) -> list[Path]:
    """Saves every output object of ``job``. ``dest`` is a folder (created if missing), or, for a job
    with exactly one output object, a file path with a suffix. Returns the written paths."""
    objects = list(job.outputs.objects)
    if not objects:
        return []
    dest = Path(dest)
    single_file = len(objects) == 1 and dest.suffix and not dest.is_dir()
    written = []
    for obj in objects:
        if not obj.url:
            raise ValueError(f"output {obj.name!r} of job {job.id} has no download URL")
        target = dest if single_file else dest / PurePosixPath(obj.object_key or obj.name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fetch_url(obj.url))
        written.append(target)
    return written
