"""The object stores at their edges: which keys are refused and how, what a local store leaves behind (no empty
folders, nothing outside the prefix, no error for what is gone already), and an S3 store built from the settings
signing its URLs for the public endpoint with the configured key and region."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from shared.objectstore import LocalObjectStore, ObjectNotFound, S3ObjectStore, object_store_from_settings
from shared.settings import Settings
from tests.shared.test_objectstore import s3_endpoint, s3_store  # noqa: F401  (a fixture, used by name)


@pytest.mark.parametrize("key", ["", "/etc/passwd", "a\\b", "a\x00b", "a//b", "a/./b", "a/../b", "a/", ".", ".."])
def test_a_key_that_could_leave_its_place_is_refused_by_name(tmp_path, key):
    with pytest.raises(ValueError) as refused:
        LocalObjectStore(tmp_path).put(key, b"x")
    assert str(refused.value) == f"invalid object key {key!r}"
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("key", ["a", "inputs/j/image", "results/j/1/v1.2..png", ".hidden/x"])
def test_ordinary_keys_are_taken_as_they_are(tmp_path, key):
    store = LocalObjectStore(tmp_path)
    store.put(key, b"x")
    assert store.get(key) == b"x" and (tmp_path / key).read_bytes() == b"x"


def test_a_local_store_makes_its_folder_and_forgets_what_is_deleted(tmp_path):
    store = LocalObjectStore(tmp_path / "not" / "yet" / "there")
    store.put("results/j/1/image.png", b"png")
    store.put("results/j/2/image.png", b"png")
    store.delete("results/j/1/image.png")
    assert not (store.root / "results" / "j" / "1").exists() and (store.root / "results" / "j" / "2").is_dir()
    store.delete("results/j/2/image.png")
    assert store.root.is_dir() and list(store.root.iterdir()) == []  # the folders went, the root stays
    store.delete("results/j/2/image.png")  # gone already: no error
    for missing in (lambda: store.get("results/j/2/image.png"), lambda: store.presigned_get("results/j/2/x", 60)):
        with pytest.raises(ObjectNotFound) as info:
            missing()
        assert str(info.value) in ("'results/j/2/image.png'", "'results/j/2/x'")


def test_a_prefix_delete_counts_what_it_removed_and_keeps_the_neighbours(tmp_path):
    store = LocalObjectStore(tmp_path)
    for key in ("results/j1/1/a.png", "results/j1/1/b.png", "results/j1/2/a.png", "results/j10/1/a.png",
                "results/j1.txt", "inputs/j1/image"):
        store.put(key, b"x")
    assert store.delete_prefix("results/j1/") == 3
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        ["inputs/j1/image", "results/j1.txt", "results/j10/1/a.png"]
    assert not (tmp_path / "results" / "j1").exists()  # its folders went with it
    assert store.delete_prefix("results/j1/") == 0 and store.delete_prefix("nothing/here/") == 0
    assert store.delete_prefix("inputs") == 1 and not (tmp_path / "inputs" / "j1").exists()


def test_a_prefix_that_ends_inside_a_name_takes_every_key_it_starts(tmp_path):
    store = LocalObjectStore(tmp_path)
    for key in ("results/j1/1/a.png", "results/j1.txt", "results/j10/1/a.png", "results/j2/1/a.png",
                "inputs/j1/image", "inputs2/j1/image"):
        store.put(key, b"x")
    assert store.delete_prefix("results/j1") == 3
    assert store.delete_prefix("inputs") == 2  # no folder named whole: from the top
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()] == ["results/j2/1/a.png"]


def test_listing_from_the_start_or_after_a_key(tmp_path):
    store = LocalObjectStore(tmp_path)
    keys = ["0/first", "a.b", "a/x", "b.c/d", "b/y/z", "c", "c.d/e"]  # as S3 orders them: "a.b" < "a/x" < "b.c"
    for key in reversed(keys):
        store.put(key, b"x")
    assert [o.key for o in store.list_after("")] == keys  # a folder sorts as its name plus "/"
    assert [o.key for o in store.list_after("", "a/x")] == keys[3:]
    assert [o.key for o in store.list_after("b/")] == ["b/y/z"]
    assert [o.key for o in store.list_after("", "b/")] == keys[4:]


def test_a_listing_goes_past_an_object_removed_while_it_walks(tmp_path):
    store = LocalObjectStore(tmp_path)
    for key in ("f/a", "f/c"):
        store.put(key, b"x")
    (tmp_path / "f" / "b").symlink_to(tmp_path / "f" / "gone")  # listed by the folder, gone when stat'ed
    assert [o.key for o in store.list_after("f/")] == ["f/a", "f/c"]


def test_an_s3_store_from_the_settings_signs_for_the_public_endpoint_with_its_key_and_region(s3_endpoint):  # noqa: F811
    settings = Settings(object_store_url="s3://llada-from-settings", s3_endpoint=f"http://{s3_endpoint}",
                        s3_secure=True, s3_access_key="AKIDTEST", s3_secret_key="shh", s3_region="eu-west-3",
                        s3_public_endpoint="files.example.com", s3_public_secure=True)
    store = object_store_from_settings(settings)
    store.put("results/j/1/image.png", b"png", "image/png")  # the internal endpoint, plain HTTP as its URL says
    assert store.client.stat_object(store.bucket, "results/j/1/image.png").content_type == "image/png"
    url = urlparse(store.presigned_get("results/j/1/image.png", 60))
    credential = parse_qs(url.query)["X-Amz-Credential"][0].split("/")
    assert (url.scheme, url.netloc) == ("https", "files.example.com")
    assert url.path == "/llada-from-settings/results/j/1/image.png"
    assert (credential[0], credential[2], credential[3]) == ("AKIDTEST", "eu-west-3", "s3")


def test_an_s3_store_defaults_and_missing_objects(s3_endpoint):  # noqa: F811
    store = s3_store(s3_endpoint)
    store.put("inputs/j/blob", b"x")
    assert store.client.stat_object(store.bucket, "inputs/j/blob").content_type == "application/octet-stream"
    credential = parse_qs(urlparse(store.presigned_get("inputs/j/blob", 60)).query)["X-Amz-Credential"][0]
    assert credential.split("/")[2] == "us-east-1"
    assert store.exists("inputs/j/blob") and not store.exists("inputs/j/other")
    with pytest.raises(ObjectNotFound) as info:
        store.get("inputs/j/other")
    assert str(info.value) == "'inputs/j/other'"
    again = type(store)(s3_endpoint, "testing", "testing", store.bucket)  # the bucket exists: taken as it is
    assert again.get("inputs/j/blob") == b"x"
    assert [o.key for o in store.list_after("inputs/")] == ["inputs/j/blob"]


def test_an_s3_url_without_a_bucket_says_so():
    with pytest.raises(ValueError) as refused:
        object_store_from_settings(Settings(object_store_url="s3://"))
    assert str(refused.value) == "object_store_url: s3:// needs a bucket name, e.g. s3://llada"


def test_a_file_url_may_name_a_relative_or_an_absolute_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = object_store_from_settings(Settings(data_dir=tmp_path, object_store_url="file://objects/here"))
    absolute = object_store_from_settings(Settings(data_dir=tmp_path, object_store_url=f"file://{tmp_path}/there"))
    assert (relative.root, absolute.root) == (tmp_path / "objects" / "here", tmp_path / "there")


def test_an_s3_endpoint_without_a_scheme_is_tls_when_the_settings_say_so(monkeypatch):
    monkeypatch.setattr(S3ObjectStore, "_ensure_bucket", lambda self: None)  # no such host: no request
    settings = Settings(object_store_url="s3://llada", s3_endpoint="minio.internal:9000", s3_secure=True,
                        s3_region="eu-west-3", s3_public_endpoint="files.example.com")
    store = object_store_from_settings(settings)
    internal = urlparse(store.client.presigned_get_object("llada", "results/j/1/image.png"))
    assert (internal.scheme, internal.netloc) == ("https", "minio.internal:9000")
