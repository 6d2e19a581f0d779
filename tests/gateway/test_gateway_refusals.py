"""Every refused request: the right status, the offending field named (message and the
``llada-error-field`` trailer), and nothing left in the database, the bucket or the queue."""

import math

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared.objectstore import LocalObjectStore
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


def T(**params):
    params.setdefault("prompt", "a lighthouse at dusk")
    return pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(**params))


def U(**params):
    params.setdefault("image", png())
    params.setdefault("question", "What is shown?")
    return pb.SubmitJobRequest(understand=pb.UnderstandParams(**params))


def E(**params):
    params.setdefault("image", png())
    params.setdefault("instruction", "make it night")
    return pb.SubmitJobRequest(edit=pb.EditParams(**params))


# The gw fixture allows 500 prompt characters and 200 kB images.
TRUNCATED_PNG = png(300, 300)[:-200]
BAD_SUBMITS = [
    ("no kind set (unknown kind)", pb.SubmitJobRequest(request_id="x"), "params"),
    ("missing prompt", pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(width=512)), "text_to_image.prompt"),
    ("blank prompt", T(prompt="   "), "text_to_image.prompt"),
    ("1 MB prompt", T(prompt="x" * 1_000_000), "text_to_image.prompt"),
    ("width not a multiple of 32", T(width=500), "text_to_image.width"),
    ("width too large", T(width=4096), "text_to_image.width"),
    ("height too small", T(height=64), "text_to_image.height"),
    ("zero steps", T(steps=0), "text_to_image.steps"),
    ("steps beyond block length", T(steps=64, block_length=32), "text_to_image.steps"),
    ("NaN cfg scale", T(cfg_scale=math.nan), "text_to_image.cfg_scale"),
    ("infinite cfg scale", T(cfg_scale=math.inf), "text_to_image.cfg_scale"),
    ("negative seed", T(seed=-1), "text_to_image.seed"),
    ("unknown decoder value", T(decoder=7), "text_to_image.decoder"),
    ("unknown mode value", T(mode=5), "text_to_image.mode"),
    ("decoder steps zero", T(decoder_steps=0), "text_to_image.decoder_steps"),
    ("sprint keep ratio above 1", T(sprint=pb.SprintOptions(keep_ratio=1.5)), "text_to_image.sprint.keep_ratio"),
    ("sprint unknown remasking", T(sprint=pb.SprintOptions(remasking=9)), "text_to_image.sprint.remasking"),
    ("priority out of range", pb.SubmitJobRequest(priority=42, text_to_image=pb.TextToImageParams(prompt="p")),
     "priority"),
    ("request id too long", pb.SubmitJobRequest(request_id="r" * 200,
                                                text_to_image=pb.TextToImageParams(prompt="p")), "request_id"),
    ("understand without image", U(image=b""), "understand.image"),
    ("undecodable image", U(image=b"definitely not an image"), "understand.image"),
    ("truncated image", U(image=TRUNCATED_PNG), "understand.image"),
    ("oversized image", U(image=b"\x89PNG" + b"\0" * 250_000), "understand.image"),
    ("understand without question", U(question=""), "understand.question"),
    ("understand zero gen length", U(gen_length=0), "understand.gen_length"),
    ("understand NaN threshold", U(threshold=math.nan), "understand.threshold"),
    ("edit without instruction", E(instruction=""), "edit.instruction"),
    ("edit negative text scale", E(cfg_text_scale=-1.0), "edit.cfg_text_scale"),
    ("edit undecodable image", E(image=b"GIF89a-broken"), "edit.image"),
]


def _field(err: grpc.RpcError) -> str | None:
    return dict(err.trailing_metadata() or ()).get("llada-error-field")


def _assert_nothing_stored(gw, before):
    assert (gw.job_count(), gw.objects(), len(gw.queue.sent)) == before


@pytest.fixture(scope="module")
def md(gw):
    return gw.key("t-refusals")


@pytest.mark.parametrize("request_, field", [c[1:] for c in BAD_SUBMITS], ids=[c[0] for c in BAD_SUBMITS])
def test_bad_submit_is_invalid_argument_naming_the_field(gw, md, request_, field):
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(request_, metadata=md)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert _field(err.value) == field
    assert err.value.details().startswith(field + ":")
    _assert_nothing_stored(gw, before)


BAD_READS = [
    ("get without id", "GetJob", pb.GetJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
    ("get unknown id", "GetJob", pb.GetJobRequest(job_id="00000000-0000-0000-0000-000000000000"),
     grpc.StatusCode.NOT_FOUND, "job_id"),
    ("list garbage page token", "ListJobs", pb.ListJobsRequest(page_token="not-a-token!"),
     grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
    ("list negative page size", "ListJobs", pb.ListJobsRequest(page_size=-1),
     grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
    ("list unknown state", "ListJobs", pb.ListJobsRequest(state=99), grpc.StatusCode.INVALID_ARGUMENT, "state"),
    ("list unknown kind", "ListJobs", pb.ListJobsRequest(kind=42), grpc.StatusCode.INVALID_ARGUMENT, "kind"),
    ("cancel unknown id", "CancelJob", pb.CancelJobRequest(job_id="00000000-0000-4000-8000-000000000000"),
     grpc.StatusCode.NOT_FOUND, "job_id"),
    ("cancel malformed id", "CancelJob", pb.CancelJobRequest(job_id="nope"), grpc.StatusCode.INVALID_ARGUMENT,
     "job_id"),
    ("delete without id", "DeleteJob", pb.DeleteJobRequest(), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
]


@pytest.mark.parametrize("method, request_, code, field", [c[1:] for c in BAD_READS], ids=[c[0] for c in BAD_READS])
def test_bad_lookup_names_the_field(gw, md, method, request_, code, field):
    with pytest.raises(grpc.RpcError) as err:
        getattr(gw.stub, method)(request_, metadata=md)
    assert err.value.code() == code
    assert _field(err.value) == field


MISSING_JOB_ID = "00000000-0000-4000-8000-00000000abcd"
WORD_FOR_WORD = [
    ("SubmitJob", pb.SubmitJobRequest(),
     "params: unknown or missing job kind: set one of text_to_image, understand, edit"),
    ("SubmitJob", U(image=b""), "understand.image: is required (the encoded bytes of an image)"),
    ("SubmitJob", U(image=b"\x89PNG" + b"\0" * 199_997),  # one byte past the gateway's 200 000
     "understand.image: is 200001 bytes; the limit is 200000"),
    ("ListJobs", pb.ListJobsRequest(state=99), "state: unknown job state 99"),
    ("ListJobs", pb.ListJobsRequest(kind=42), "kind: unknown job kind 42"),
    ("GetJob", pb.GetJobRequest(job_id=MISSING_JOB_ID), f"job {MISSING_JOB_ID} not found"),
]


@pytest.mark.parametrize("method, request_, details", WORD_FOR_WORD)
def test_refusals_say_what_was_wrong_word_for_word(gw, md, method, request_, details):
    with pytest.raises(grpc.RpcError) as err:
        getattr(gw.stub, method)(request_, metadata=md)
    code = grpc.StatusCode.NOT_FOUND if details.endswith("not found") else grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.code(), err.value.details()) == (code, details)


@pytest.mark.parametrize("metadata, details", [
    ((), "missing API key (call metadata 'x-api-key')"),
    ((("x-api-key", "llada_wrong-key-000000000000"),), "invalid API key"),
], ids=["missing key", "wrong key"])
def test_every_rpc_refuses_a_missing_or_wrong_api_key(gw, metadata, details):
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    calls = [(gw.stub.SubmitJob, T()), (gw.stub.GetJob, pb.GetJobRequest(job_id="x")),
             (gw.stub.ListJobs, pb.ListJobsRequest()), (gw.stub.CancelJob, pb.CancelJobRequest(job_id="x")),
             (gw.stub.DeleteJob, pb.DeleteJobRequest(job_id="x"))]
    for call, request_ in calls:
        with pytest.raises(grpc.RpcError) as err:
            call(request_, metadata=metadata)
        assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, details)
    with pytest.raises(grpc.RpcError) as err:
        list(gw.stub.WatchJob(pb.WatchJobRequest(job_id="x"), metadata=metadata))
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, details)
    _assert_nothing_stored(gw, before)


def test_full_queue_is_resource_exhausted_per_tenant_and_in_total(make_gateway):
    small = make_gateway(max_queued_per_tenant=2, max_queued_total=3)
    a, b = small.key("a"), small.key("b")
    for _ in range(2):
        small.stub.SubmitJob(U(), metadata=a)
    before = (small.job_count(), small.objects(), len(small.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        small.stub.SubmitJob(U(), metadata=a)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant" in err.value.details()
    _assert_nothing_stored(small, before)
    small.stub.SubmitJob(T(), metadata=b)  # b has room of its own; now 3 queued in total
    with pytest.raises(grpc.RpcError) as err:
        small.stub.SubmitJob(T(), metadata=b)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in err.value.details()
    first = small.stub.ListJobs(pb.ListJobsRequest(), metadata=a).jobs[0]
    assert first.state == pb.JOB_STATE_QUEUED
    # Cancelling frees a place.
    small.stub.CancelJob(pb.CancelJobRequest(job_id=first.id), metadata=a)
    assert small.stub.SubmitJob(T(), metadata=b).state == pb.JOB_STATE_QUEUED


def test_idempotent_retry_answers_even_when_the_queue_is_full(make_gateway):
    small = make_gateway(max_queued_per_tenant=1, max_queued_total=1)
    md = small.key("c")
    request_ = pb.SubmitJobRequest(request_id="only-one", text_to_image=pb.TextToImageParams(prompt="p"))
    first = small.stub.SubmitJob(request_, metadata=md)
    assert small.stub.SubmitJob(request_, metadata=md).id == first.id


def test_a_failed_insert_removes_the_stored_input_image(gw, md, monkeypatch):
    import services.gateway.servicer as servicer

    def broken_submit(*args, **kwargs):
        raise RuntimeError("database went away")
    monkeypatch.setattr(servicer.repo, "submit_job", broken_submit)
    before = (gw.job_count(), gw.objects(), len(gw.queue.sent))
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(U(), metadata=md)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "database went away" not in err.value.details()  # internals stay in the log
    _assert_nothing_stored(gw, before)


class PutLandsThenFailsStoreDouble(LocalObjectStore):
    """An upload that reaches the store whose answer is lost (a connection reset after the body went out)."""

    def put(self, key, data, content_type="application/octet-stream"):
        super().put(key, data, content_type)
        raise ConnectionResetError("the store's answer was lost")


def test_an_upload_whose_answer_was_lost_is_removed_and_no_job_is_made(make_gateway, tmp_path):
    gw = make_gateway(store=PutLandsThenFailsStoreDouble(tmp_path / "lost-answers"), max_image_bytes=200_000)
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(U(), metadata=gw.key("t-lost-put"))
    assert err.value.code() == grpc.StatusCode.INTERNAL, err.value.details()
    assert (gw.job_count(), gw.objects(), gw.queue.sent) == (0, [], [])


def test_messages_above_the_configured_size_are_refused_by_grpc(make_gateway):
    small = make_gateway(max_message_bytes=64 * 1024)
    md = small.key("big")
    with pytest.raises(grpc.RpcError) as err:
        small.stub.SubmitJob(U(image=b"\x89PNG" + b"\0" * 100_000), metadata=md)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert small.job_count() == 0 and small.objects() == []
