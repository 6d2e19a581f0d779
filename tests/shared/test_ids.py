"""Job ids, request ids and page tokens are checked before they reach a query (shared.ids, the
repository's page-token decoder): a malformed one is InvalidArgument naming the field."""

import base64
import json

import pytest

from shared import repository as repo
from shared.ids import validate_job_id, validate_request_id
from shared.jobs import InvalidArgument

A_UUID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"


def refused_field(fn, *args) -> str:
    with pytest.raises(InvalidArgument) as info:
        fn(*args)
    return info.value.field


def test_job_ids_must_have_the_uuid_form():
    assert validate_job_id(A_UUID) == A_UUID
    assert validate_job_id(A_UUID.upper()) == A_UUID  # stored lowercase
    for bad in ("", "x", A_UUID + "\x00", A_UUID[:-1] + "\x00", A_UUID * 2, "{" + A_UUID + "}",
                A_UUID.replace("-", ""), f"urn:uuid:{A_UUID}", A_UUID + "\n"):
        assert refused_field(validate_job_id, bad) == "job_id"
    assert refused_field(validate_job_id, "nope", "page_token") == "page_token"


def test_request_ids_are_at_most_128_printable_characters():
    assert validate_request_id("") is None
    assert validate_request_id("order-42 ü") == "order-42 ü"
    assert validate_request_id("r" * 128) == "r" * 128
    for bad in ("r" * 129, "a\x00b", "a\tb", "a\nb", "\x7f", "a\u2028b"):
        assert refused_field(validate_request_id, bad) == "request_id"


def _token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_page_tokens_are_decoded_defensively(s):
    job = repo.submit_job(s, tenant="t", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"},
                             input_keys={}).job
    repo.submit_job(s, tenant="t", request_id=None, kind="TEXT_TO_IMAGE", params={"prompt": "p"}, input_keys={})
    _, good = repo.list_jobs(s, "t", page_size=1)
    assert [j.id for j in repo.list_jobs(s, "t", page_size=1, page_token=good)[0]] == [job.id]
    bad_tokens = ["A" * 10_000, "abc\x00", "ab=c", "a", _token([[[[[]]]]]), _token("x"), _token([1, 2]),
                  _token(["2026-01-01T00:00:00+00:00", A_UUID, 3]), _token(["2026-01-01T00:00:00", A_UUID]),
                  _token(["9999-12-31T23:59:59-14:00", A_UUID]), _token(["2026-01-01T00:00:00+00:00", "x\x00"]),
                  base64.urlsafe_b64encode(b"[" * 180).decode(), base64.urlsafe_b64encode(b"\xff\xfe").decode()]
    for bad in bad_tokens:
        assert refused_field(lambda t: repo.list_jobs(s, "t", page_token=t), bad) == "page_token", bad
    assert len(good) < repo.MAX_PAGE_TOKEN_CHARS
