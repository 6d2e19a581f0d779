import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import urllib3

from shared.objectstore import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    input_key,
    job_prefixes,
    object_store_from_settings,
    result_key,
)
from shared.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free loopback port, as a stand-in for MinIO."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]')")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def s3_store(endpoint, **kw):
    return S3ObjectStore(endpoint, "testing", "testing", f"llada-{uuid.uuid4().hex[:8]}", **kw)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return s3_store(request.getfixturevalue("s3_endpoint"))


def test_put_get_exists_delete(store):
    assert isinstance(store, ObjectStore)
    key = result_key("job1", 2, "image.png")
    assert key == "results/job1/2/image.png"  # scoped by the attempt that wrote it
    assert not store.exists(key)
    store.put(key, b"\x89PNG...", "image/png")
    assert store.exists(key) and store.get(key) == b"\x89PNG..."
    store.put(key, b"second", "image/png")  # a rewrite replaces the object whole
    assert store.get(key) == b"second"
    store.delete(key)
    assert not store.exists(key) and list(store.list_after("results/")) == []  # no empty folders left
    with pytest.raises(ObjectNotFound):
        store.get(key)


def test_delete_prefix_removes_only_that_job(store):
    for job in ("j1", "j10"):
        store.put(input_key(job, "image"), b"in")
        store.put(result_key(job, 1, "image.png"), b"out")
    removed = sum(store.delete_prefix(prefix) for prefix in job_prefixes("j1"))
    assert removed == 2
    assert not store.exists(input_key("j1", "image")) and not store.exists(result_key("j1", 1, "image.png"))
    assert store.get(input_key("j10", "image")) == b"in" and store.exists(result_key("j10", 1, "image.png"))


def test_listing_is_in_key_order_resumable_and_lazy(store):
    keys = ["inputs/j/image.png", "results/j.x/1/a", "results/j/1/image.png", "results/j/10/image.png",
            "results/j/2/image.png", "results/k/1/image.png"]
    for key in reversed(keys):
        store.put(key, b"x")
    listed = [obj.key for obj in store.list_after("results/")]
    assert listed == sorted(k for k in keys if k.startswith("results/"))  # as S3 orders keys: "j.x" < "j/"
    assert [o.key for o in store.list_after("results/", "results/j/10/image.png")] == listed[3:]
    assert [o.key for o in store.list_after("results/j/")] == listed[1:4]
    assert [o.key for o in store.list_after("results/", "results/z")] == []
    listing = store.list_after("")
    first = next(listing)
    assert first.key == "inputs/j/image.png" and first.modified.tzinfo is not None


@pytest.mark.parametrize("key", ["", "/etc/passwd", "inputs/../../x", "inputs//x", "a\\b"])
def test_bad_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError):
        LocalObjectStore(tmp_path).put(key, b"x")


def test_local_presigned_url_is_a_file_url(tmp_path):
    store = LocalObjectStore(tmp_path)
    store.put("results/j/image.png", b"png")
    url = store.presigned_get("results/j/image.png", 60)
    assert url.startswith("file://") and Path(urlparse(url).path).read_bytes() == b"png"


def test_s3_presigned_url_is_signed_for_the_public_endpoint_with_expiry(s3_endpoint):
    store = s3_store(s3_endpoint, public_endpoint="files.example.com", public_secure=True)
    store.put("results/j/image.png", b"png-bytes", "image/png")
    url = urlparse(store.presigned_get("results/j/image.png", 900))
    query = parse_qs(url.query)
    assert (url.scheme, url.netloc) == ("https", "files.example.com")
    assert url.path == f"/{store.bucket}/results/j/image.png"
    assert query["X-Amz-Expires"] == ["900"] and "X-Amz-Signature" in query


def test_s3_presigned_url_downloads_when_public_is_internal(s3_endpoint):
    store = s3_store(s3_endpoint)
    store.put("results/j/image.png", b"png-bytes", "image/png")
    response = urllib3.request("GET", store.presigned_get("results/j/image.png", 60))
    assert response.status == 200 and response.data == b"png-bytes"


def test_store_from_settings(tmp_path, s3_endpoint):
    local = object_store_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "objects").resolve()
    bucket = f"llada-{uuid.uuid4().hex[:8]}"
    s3 = object_store_from_settings(
        Settings(object_store_url=f"s3://{bucket}", s3_endpoint=s3_endpoint, s3_access_key="a", s3_secret_key="b")
    )
    assert isinstance(s3, S3ObjectStore) and s3.client.bucket_exists(bucket)  # created on start
    with pytest.raises(ValueError, match="object_store_url"):
        object_store_from_settings(Settings(object_store_url="ftp://x"))


def test_endpoint_may_be_given_as_a_url():
    from shared.objectstore import split_endpoint

    assert split_endpoint("minio:9000", False) == ("minio:9000", False)
    assert split_endpoint("https://s3.example.com", False) == ("s3.example.com", True)
    assert split_endpoint("http://localhost:9000/", True) == ("localhost:9000", False)
    with pytest.raises(ValueError, match="endpoint"):
        split_endpoint("https://s3.example.com/bucket", True)
