"""Submits with input images: a retry or a full queue is answered before anything is uploaded."""

import grpc
import pytest

from tests.gateway.images_for_tests import png
from shared.objectstore import LocalObjectStore
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


class PutCountingStoreDouble(LocalObjectStore):
    """The local store, counting uploads."""

    def __init__(self, root):
        super().__init__(root)
        self.puts = 0

    def put(self, key, data, content_type):
        self.puts += 1
        return super().put(key, data, content_type)


def understand(request_id=""):
    return pb.SubmitJobRequest(request_id=request_id,
                               understand=pb.UnderstandParams(image=png(), question="What is shown?"))


def test_a_retried_image_submit_uploads_nothing_and_answers_the_same_job(make_gateway, tmp_path):
    store = PutCountingStoreDouble(tmp_path / "objects")
    gw = make_gateway(store=store)
    md = gw.key("acme")
    first = gw.stub.SubmitJob(understand("r-1"), metadata=md)
    assert store.puts == 1 and first.queue_position == 1
    again = gw.stub.SubmitJob(understand("r-1"), metadata=md)
    assert again.id == first.id and again.queue_position == 1
    assert store.puts == 1 and gw.job_count() == 1 and len(gw.queue.sent) == 1


def test_a_full_queue_refuses_an_image_submit_before_uploading(make_gateway, tmp_path):
    store = PutCountingStoreDouble(tmp_path / "objects")
    gw = make_gateway(store=store, max_queued_per_tenant=1, max_queued_total=10)
    md = gw.key("acme")
    gw.stub.SubmitJob(understand(), metadata=md)
    with pytest.raises(grpc.RpcError) as err:
        gw.stub.SubmitJob(understand(), metadata=md)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "tenant" in err.value.details()
    assert store.puts == 1 and gw.job_count() == 1 and len(gw.objects()) == 1
