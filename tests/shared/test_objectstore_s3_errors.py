"""The S3 store's answers to the errors a real S3 or MinIO gives and moto does not: a bucket another replica created
first, the several codes a missing object comes back as, a prefix delete the server refuses in part, and errors
that are not "missing", which must reach the caller. The minio client is replaced by a double that raises them.
And a TLS endpoint's clients, which sign without a request."""

from __future__ import annotations

import pytest
from minio.deleteobjects import DeleteError
from minio.error import S3Error

from shared.objectstore import ObjectNotFound, S3ObjectStore


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, f"{code} happened", "/bucket/key", "req-1", "host-1")


class MinioClientDouble:
    """Answers each call the S3 store makes with what the test set: a value, or an S3Error to raise."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls: list[str] = []

    def _answer(self, name):
        self.calls.append(name)
        answer = self.answers.get(name)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bucket_exists(self, bucket):
        return self._answer("bucket_exists")

    def make_bucket(self, bucket):
        return self._answer("make_bucket")

    def stat_object(self, bucket, key):
        return self._answer("stat_object")

    def get_object(self, bucket, key):
        return self._answer("get_object")

    def list_objects(self, bucket, prefix, recursive):
        return self._answer("list_objects")

    def remove_objects(self, bucket, deletes):
        self.deleted = [d.name for d in deletes]
        return iter(self._answer("remove_objects") or [])


def store_with(client: MinioClientDouble) -> S3ObjectStore:
    store = S3ObjectStore("127.0.0.1:9", "key", "secret", "bucket", create_bucket=False)
    store.client = client
    return store


@pytest.mark.parametrize("code", ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"])
def test_a_bucket_another_replica_created_first_is_used(code):
    client = MinioClientDouble(bucket_exists=False, make_bucket=s3_error(code))
    store_with(client)._ensure_bucket()
    assert client.calls == ["bucket_exists", "make_bucket"]


def test_a_bucket_that_exists_is_not_created_and_a_refused_create_is_raised():
    client = MinioClientDouble(bucket_exists=True)
    store_with(client)._ensure_bucket()
    assert client.calls == ["bucket_exists"]

    refused = MinioClientDouble(bucket_exists=False, make_bucket=s3_error("AccessDenied"))
    with pytest.raises(S3Error) as raised:
        store_with(refused)._ensure_bucket()
    assert raised.value.code == "AccessDenied"


@pytest.mark.parametrize("code", ["NoSuchKey", "NoSuchObject", "NotFound"])
def test_every_code_a_missing_object_comes_back_as_means_it_does_not_exist(code):
    assert store_with(MinioClientDouble(stat_object=s3_error(code))).exists("results/j/1/image.png") is False


@pytest.mark.parametrize("code", ["AccessDenied", "NoSuchBucket", "SlowDown"])
def test_other_errors_of_a_lookup_reach_the_caller(code):
    store = store_with(MinioClientDouble(stat_object=s3_error(code), get_object=s3_error(code)))
    with pytest.raises(S3Error):
        store.exists("results/j/1/image.png")
    with pytest.raises(S3Error) as raised:
        store.get("results/j/1/image.png")
    assert not isinstance(raised.value, ObjectNotFound)


def test_a_get_of_a_missing_object_names_the_key():
    with pytest.raises(ObjectNotFound) as raised:
        store_with(MinioClientDouble(get_object=s3_error("NoSuchKey"))).get("results/j/1/image.png")
    assert str(raised.value) == "'results/j/1/image.png'"


class Listed:
    def __init__(self, name):
        self.object_name = name


def test_a_prefix_delete_the_server_refuses_in_part_says_how_many_and_the_first():
    errors = [DeleteError("AccessDenied", "no", "results/j/1/a.png", None),
              DeleteError("AccessDenied", "no", "results/j/1/b.png", None)]
    client = MinioClientDouble(list_objects=[Listed("results/j/1/a.png"), Listed("results/j/1/b.png"),
                                             Listed("results/j/1/c.png")], remove_objects=errors)

    with pytest.raises(RuntimeError) as raised:
        store_with(client).delete_prefix("results/j/")

    assert str(raised.value).startswith("could not delete 2 objects under 'results/j/': ")
    assert "a.png" in str(raised.value) and "b.png" not in str(raised.value)
    assert client.deleted == ["results/j/1/a.png", "results/j/1/b.png", "results/j/1/c.png"]


def test_a_tls_endpoint_is_spoken_to_over_https_in_its_region_and_the_public_one_follows_it():
    store = S3ObjectStore("minio.internal:9000", "key", "secret", "bucket", secure=True, region="eu-west-1",
                          public_endpoint="objects.example.com", create_bucket=False)
    # Signing needs no request when the region is known: neither host exists.
    internal = store.client.presigned_get_object("bucket", "results/j/1/image.png")
    assert internal.startswith("https://minio.internal:9000/bucket/results/j/1/image.png?")
    assert "eu-west-1" in internal
    public = store.presigned_get("results/j/1/image.png", 60)
    assert public.startswith("https://objects.example.com/bucket/results/j/1/image.png?") and "eu-west-1" in public
