"""Object storage for job inputs and results: a local folder (embedded) or S3 / MinIO (production).

Keys: `inputs/<job_id>/<name>`, and `results/<job_id>/<attempt>/<name>` — scoped by the attempt that wrote
them, so a late upload of a paused, fenced-off attempt can never replace the winning attempt's object; the job
row names the winner's keys, and the reaper's sweep removes result objects no row names (ARCHITECTURE §3).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from shared.files import replace_file


class ObjectNotFound(KeyError):
    pass


def input_key(job_id: str, name: str) -> str:
    return f"inputs/{job_id}/{name}"


def result_key(job_id: str, attempt: int, name: str) -> str:
    return f"results/{job_id}/{attempt}/{name}"


INPUTS_PREFIX, RESULTS_PREFIX = "inputs/", "results/"


def job_prefixes(job_id: str) -> tuple[str, str]:
    """Every prefix under which a job's objects live (to delete them all)."""
    return f"{INPUTS_PREFIX}{job_id}/", f"{RESULTS_PREFIX}{job_id}/"


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or "\x00" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class StoredObject:
    key: str
    modified: datetime  # UTC


@runtime_checkable
class ObjectStore(Protocol):  # pragma: no mutate block (an interface: no code, and isinstance reads its members)
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def exists(self, key: str) -> bool: ...
    def presigned_get(self, key: str, expires_s: int) -> str: ...
    def list_after(self, prefix: str, start_after: str = "") -> Iterator[StoredObject]:
        """Objects under `prefix` in key order, from the first key after `start_after`; lazy, so a caller
        takes what it needs of a big bucket."""
        ...


class LocalObjectStore:
    """Objects as files under `root` (the embedded mode; every process on the machine shares it)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        for _ in range(3):  # a concurrent delete may prune the folder between mkdir and the write
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Write then rename: a reader never sees half an object, and a rewrite replaces it whole.
                return replace_file(path, data)
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"could not create a folder for {key!r}")

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        # Prune the folders left empty (results/<job>/<attempt>/), as a bucket has no folders to leave.
        for folder in path.parents:
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty, or gone already
                break

    def delete_prefix(self, prefix: str) -> int:
        # Walk only the deepest folder the prefix names completely, not the whole store.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return 0
        removed = 0
        # Children before their folders, and the prefix's own folder last (results/<job>/ goes with its objects).
        folders_too = [base] if base != self.root else []
        for path in [*sorted(base.rglob("*"), reverse=True), *folders_too]:
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                path.unlink(missing_ok=True)
                removed += 1
            elif path.is_dir() and (key + "/").startswith(prefix) and not any(path.iterdir()):
                path.rmdir()
        return removed

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def presigned_get(self, key: str, expires_s: int) -> str:
        # A local file needs no signature and cannot expire: the embedded mode's clients share the disk.
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return path.as_uri()

    def list_after(self, prefix: str, start_after: str = "") -> Iterator[StoredObject]:
        # Folders are walked lazily, each sorted as its keys sort ("a/" after "a.x"), and skipped whole
        # when all their keys come before `start_after` or none starts with `prefix`.
        def walk(folder: Path, key_prefix: str) -> Iterator[StoredObject]:
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                return
            entries.sort(key=lambda e: e.name + ("/" if e.is_dir() else ""))
            for entry in entries:
                key = key_prefix + entry.name
                if entry.is_dir():
                    sub = key + "/"
                    within_prefix = sub.startswith(prefix) or prefix.startswith(sub)
                    passed = start_after >= sub and not start_after.startswith(sub)
                    if within_prefix and not passed:
                        yield from walk(Path(entry.path), sub)
                elif key.startswith(prefix) and key > start_after:
                    try:
                        modified = datetime.fromtimestamp(entry.stat().st_mtime, timezone.utc)
                    except FileNotFoundError:  # removed while we walked
                        continue
                    yield StoredObject(key, modified)

        return walk(self.root, "")


class S3ObjectStore:
    """S3 or MinIO through the minio client; the bucket is created on start if missing.

    Presigned URLs are signed for `public_endpoint` (what clients outside the cluster reach): the
    SigV4 signature covers the Host header, so a URL signed for the internal endpoint and rewritten
    afterwards would be refused. Signing needs no request when the region is known.
    """

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        public_secure: bool | None = None,
        create_bucket: bool = True,
    ):
        self.bucket = bucket
        self.client = Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region)
        self.public_client = Minio(
            public_endpoint or endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure if public_secure is None else public_secure,
            region=region,
        )
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        if self.client.bucket_exists(self.bucket):
            return
        try:
            self.client.make_bucket(self.bucket)
        except S3Error as exc:  # another process created it first
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(self.bucket, check_key(key), io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str) -> bytes:
        try:
            response = self.client.get_object(self.bucket, check_key(key))
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                raise ObjectNotFound(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, check_key(key))

    def delete_prefix(self, prefix: str) -> int:
        keys = [obj.object_name for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)]
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise RuntimeError(f"could not delete {len(errors)} objects under {prefix!r}: {errors[0]}")
        return len(keys)

    def exists(self, key: str) -> bool:
        try:
            self.client.stat_object(self.bucket, check_key(key))
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def presigned_get(self, key: str, expires_s: int) -> str:
        return self.public_client.presigned_get_object(self.bucket, check_key(key), expires=timedelta(seconds=expires_s))

    def list_after(self, prefix: str, start_after: str = "") -> Iterator[StoredObject]:
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                            start_after=start_after or None):
            yield StoredObject(obj.object_name, obj.last_modified)


def split_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """`host:port` as minio wants it; an `http://` / `https://` prefix, if given, decides `secure`."""
    if "://" not in endpoint:
        return endpoint, secure
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or parsed.path not in ("", "/"):
        raise ValueError(f"S3 endpoint {endpoint!r}: expected host:port or http(s)://host:port")
    return parsed.netloc, parsed.scheme == "https"


def object_store_from_settings(settings) -> ObjectStore:
    """`file://<dir>` → LocalObjectStore, `s3://<bucket>` → S3ObjectStore (endpoint and keys from settings)."""
    url = urlparse(settings.object_store_url)
    if url.scheme == "file":
        return LocalObjectStore(url.netloc + url.path)  # file://relative/dir or file:///absolute/dir
    if url.scheme == "s3":
        if not url.netloc:
            raise ValueError("object_store_url: s3:// needs a bucket name, e.g. s3://llada")
        endpoint, secure = split_endpoint(settings.s3_endpoint, settings.s3_secure)
        public_endpoint, public_secure = split_endpoint(settings.public_endpoint, settings.public_secure)
        return S3ObjectStore(
            endpoint,
            settings.s3_access_key,
            settings.s3_secret_key.get_secret_value(),
            url.netloc,
            secure=secure,
            region=settings.s3_region,
            public_endpoint=public_endpoint,
            public_secure=public_secure,
        )
    raise ValueError(f"object_store_url: unsupported scheme {url.scheme!r} (use file:// or s3://)")
