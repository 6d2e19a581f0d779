"""SubmitJob with a request_id already used: the same request (kind, parameters once defaults are filled
in, input image bytes) returns the first job; a different one is ALREADY_EXISTS naming request_id and
stores nothing — also when two such submits race. On SQLite and on Postgres."""

import itertools
import threading

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

_ids = itertools.count()


def T(request_id, **params):
    params.setdefault("prompt", "a lighthouse")
    return pb.SubmitJobRequest(request_id=request_id, text_to_image=pb.TextToImageParams(**params))


def U(request_id, image, question="What is shown?"):
    return pb.SubmitJobRequest(request_id=request_id, understand=pb.UnderstandParams(image=image, question=question))


@pytest.fixture
def rid() -> str:
    return f"req-{next(_ids)}"


@pytest.fixture(scope="module")
def md(gw_each_db):
    return gw_each_db.key("t-reuse")


def stored(gw):
    return gw.job_count(), gw.objects(), len(gw.queue.sent)


def refused_as_reused(gw, request_, md, first_id):
    before = stored(gw)
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(request_, metadata=md)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS, err.value.details()
    assert dict(err.value.trailing_metadata())["llada-error-field"] == "request_id"
    assert err.value.details().startswith("request_id:") and first_id in err.value.details()
    assert stored(gw) == before


def test_the_same_request_again_returns_the_first_job(gw_each_db, md, rid):
    first = gw_each_db.stub.SubmitJob(T(rid), metadata=md)
    before = stored(gw_each_db)
    # Defaults given explicitly are the same request; priority says when, not what.
    assert gw_each_db.stub.SubmitJob(T(rid, width=1024, steps=8), metadata=md).id == first.id
    assert gw_each_db.stub.SubmitJob(T(rid, decoder=pb.DECODER_TURBO), metadata=md).id == first.id
    again = T(rid)
    again.priority = 5
    assert gw_each_db.stub.SubmitJob(again, metadata=md).id == first.id
    assert stored(gw_each_db) == before


def test_other_parameters_or_another_kind_are_already_exists(gw_each_db, md, rid):
    first = gw_each_db.stub.SubmitJob(T(rid), metadata=md)
    refused_as_reused(gw_each_db, T(rid, prompt="a different lighthouse"), md, first.id)
    refused_as_reused(gw_each_db, T(rid, seed=7), md, first.id)
    refused_as_reused(gw_each_db, U(rid, png()), md, first.id)


def test_other_image_bytes_are_already_exists_without_uploading(gw_each_db, md, rid):
    first = gw_each_db.stub.SubmitJob(U(rid, png(64, 64)), metadata=md)
    assert gw_each_db.stub.SubmitJob(U(rid, png(64, 64)), metadata=md).id == first.id
    refused_as_reused(gw_each_db, U(rid, png(64, 48)), md, first.id)
    refused_as_reused(gw_each_db, U(rid, png(64, 64), question="What else?"), md, first.id)


def test_another_tenant_may_use_the_same_request_id_for_its_own_request(gw_each_db, md, rid):
    mine = gw_each_db.stub.SubmitJob(T(rid), metadata=md)
    theirs = gw_each_db.stub.SubmitJob(T(rid, prompt="theirs"), metadata=gw_each_db.key("t-reuse-other"))
    assert theirs.id != mine.id


@pytest.mark.parametrize("make", [lambda rid, n: T(rid, prompt=f"racer {n}"),
                                  lambda rid, n: U(rid, png(64, 32 + 32 * n))], ids=["text-to-image", "understand"])
def test_two_racing_submits_with_different_requests_make_one_job(gw_each_db, md, make):
    for round_ in range(4):
        request_id = f"race-{next(_ids)}"
        before = gw_each_db.job_count()
        barrier = threading.Barrier(2)
        outcomes = []

        def racer(n):
            barrier.wait(timeout=10)
            try:
                outcomes.append(gw_each_db.stub.SubmitJob(make(request_id, n), metadata=md, timeout=30).id)
            except grpc.RpcError as err:
                outcomes.append(err.code())

        threads = [threading.Thread(target=racer, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(40)
        codes = [o for o in outcomes if isinstance(o, grpc.StatusCode)]
        assert codes == [grpc.StatusCode.ALREADY_EXISTS] and len(outcomes) == 2, outcomes
        assert gw_each_db.job_count() == before + 1
    # The losers' images were removed: only the winners' inputs remain.
    listed = gw_each_db.stub.ListJobs(pb.ListJobsRequest(page_size=500), metadata=md).jobs
    assert all(key.split("/")[1] in {j.id for j in listed} for key in gw_each_db.objects())
