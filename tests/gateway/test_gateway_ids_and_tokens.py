"""Malformed ids, request ids, page tokens and text fields are INVALID_ARGUMENT naming the field — never
INTERNAL — on SQLite and on Postgres (which refuses a NUL in text with an error of its own), and nothing
is stored: after them the tenant's jobs still list, the table is not poisoned."""

import base64
import json

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


def token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


A_UUID = "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5f"
BAD_JOB_IDS = {
    "NUL": "3f2b8c1e-7d4a-4e5b-9c6d-0a1b2c3d4e5\x00",
    "control character": "3f2b8c1e\x1b7d4a-4e5b-9c6d-0a1b2c3d4e5f",
    "overlong": A_UUID * 100,
    "not a uuid": "job-42",
    "uuid with trailing text": A_UUID + " OR 1=1",
}
BAD_PAGE_TOKENS = {
    "NUL": "abc\x00def",
    "control character": "abc\x07",
    "overlong": "A" * 100_000,
    "not base64": "not-a-token!",
    "json nesting bomb": token(json.loads("[" * 150 + "]" * 150)),
    "nesting bomb, raw": base64.urlsafe_b64encode(b"[" * 190).decode().rstrip("="),
    "wrong types": token([17, {"a": None}]),
    "three items": token(["2026-01-01T00:00:00+00:00", A_UUID, "x"]),
    "naive time": token(["2026-01-01T00:00:00", A_UUID]),
    "time at the edge of the calendar": token(["0001-01-01T00:00:00+05:00", A_UUID]),
    "NUL in the job id": token(["2026-01-01T00:00:00+00:00", A_UUID[:-1] + "\x00"]),
    "huge job id": token(["2026-01-01T00:00:00+00:00", "x" * 150]),
}


def _refused(call, request_, md, field):
    with pytest.raises(grpc.RpcError) as err:
        result = call(request_, metadata=md)
        if not isinstance(result, pb.Job | pb.ListJobsResponse | pb.DeleteJobResponse):
            list(result)  # WatchJob: the refusal comes with the stream
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert dict(err.value.trailing_metadata() or ())["llada-error-field"] == field
    assert err.value.details().startswith(field + ":")
    return err.value


@pytest.fixture(scope="module")
def md(gw_each_db):
    return gw_each_db.key("t-ids")


@pytest.fixture(scope="module")
def a_job(gw_each_db, md):
    return gw_each_db.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p")), metadata=md)


def _still_lists(gw, md, job):
    assert [j.id for j in gw.stub.ListJobs(pb.ListJobsRequest(), metadata=md).jobs] == [job.id]


@pytest.mark.parametrize("job_id", list(BAD_JOB_IDS.values()), ids=list(BAD_JOB_IDS))
def test_a_malformed_job_id_is_invalid_argument_in_every_rpc(gw_each_db, md, a_job, job_id):
    gw = gw_each_db
    for call, request_ in ((gw.stub.GetJob, pb.GetJobRequest(job_id=job_id)),
                           (gw.stub.WatchJob, pb.WatchJobRequest(job_id=job_id)),
                           (gw.stub.CancelJob, pb.CancelJobRequest(job_id=job_id)),
                           (gw.stub.DeleteJob, pb.DeleteJobRequest(job_id=job_id))):
        err = _refused(call, request_, md, "job_id")
        assert job_id not in err.details()  # not echoed: it may be huge or hold control characters
    _still_lists(gw, md, a_job)


def test_a_job_id_in_capitals_names_the_same_job(gw_each_db, md, a_job):
    assert gw_each_db.stub.GetJob(pb.GetJobRequest(job_id=a_job.id.upper()), metadata=md).id == a_job.id


@pytest.mark.parametrize("page_token", list(BAD_PAGE_TOKENS.values()), ids=list(BAD_PAGE_TOKENS))
def test_a_garbage_page_token_is_invalid_argument(gw_each_db, md, a_job, page_token):
    _refused(gw_each_db.stub.ListJobs, pb.ListJobsRequest(page_token=page_token), md, "page_token")
    _still_lists(gw_each_db, md, a_job)


BAD_REQUEST_IDS = {"NUL": "retry-\x00-1", "escape": "retry\x1b[31m", "newline": "retry\n1", "DEL": "retry\x7f",
                   "129 characters": "r" * 129}


@pytest.mark.parametrize("request_id", list(BAD_REQUEST_IDS.values()), ids=list(BAD_REQUEST_IDS))
def test_a_bad_request_id_is_invalid_argument_and_stores_nothing(gw_each_db, md, a_job, request_id):
    before = (gw_each_db.job_count(), gw_each_db.objects(), len(gw_each_db.queue.sent))
    _refused(gw_each_db.stub.SubmitJob, pb.SubmitJobRequest(
        request_id=request_id, understand=pb.UnderstandParams(image=png(), question="q")), md, "request_id")
    assert (gw_each_db.job_count(), gw_each_db.objects(), len(gw_each_db.queue.sent)) == before
    _still_lists(gw_each_db, md, a_job)


def test_a_request_id_of_128_printable_characters_is_accepted(gw_each_db):
    md = gw_each_db.key("t-ids-long")
    request_ = pb.SubmitJobRequest(request_id="é" + "r" * 127, text_to_image=pb.TextToImageParams(prompt="p"))
    job = gw_each_db.stub.SubmitJob(request_, metadata=md)
    assert job.request_id == request_.request_id
    assert gw_each_db.stub.SubmitJob(request_, metadata=md).id == job.id


TEXTS = {
    "prompt": (lambda text: pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt=text)),
               "text_to_image.prompt"),
    "question": (lambda text: pb.SubmitJobRequest(
        understand=pb.UnderstandParams(image=png(), question=text)), "understand.question"),
    "instruction": (lambda text: pb.SubmitJobRequest(
        edit=pb.EditParams(image=png(), instruction=text)), "edit.instruction"),
}


@pytest.mark.parametrize("build, field", list(TEXTS.values()), ids=list(TEXTS))
@pytest.mark.parametrize("bad", ["a red\x00 fox", "\x1b[2Ja fox", "a fox\x0b"], ids=["NUL", "escape", "vertical tab"])
def test_control_characters_in_a_text_field_are_refused_naming_it(gw_each_db, md, a_job, build, field, bad):
    before = (gw_each_db.job_count(), gw_each_db.objects(), len(gw_each_db.queue.sent))
    err = _refused(gw_each_db.stub.SubmitJob, build(bad), md, field)
    assert "control character" in err.details()
    assert (gw_each_db.job_count(), gw_each_db.objects(), len(gw_each_db.queue.sent)) == before
    _still_lists(gw_each_db, md, a_job)


def test_tabs_and_newlines_in_a_prompt_are_kept(gw_each_db):
    md = gw_each_db.key("t-ids-text")
    job = gw_each_db.stub.SubmitJob(pb.SubmitJobRequest(
        text_to_image=pb.TextToImageParams(prompt="line one\n\tline two\r\n")), metadata=md)
    assert dict(job.params)["prompt"] == "line one\n\tline two\r\n"
    assert gw_each_db.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).params == job.params
