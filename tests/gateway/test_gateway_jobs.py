"""SubmitJob / GetJob / ListJobs over a real loopback server: defaults, stored inputs, queue message,
queue position, idempotency, pagination, tenant isolation."""

import grpc
import pytest

from tests.gateway.images_for_tests import jpeg, png
from shared import repository as repo
from shared.proto.llada.serve.v1 import jobs_pb2 as pb


def t2i(prompt="a red fox", **params) -> pb.SubmitJobRequest:
    return pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt=prompt, **params))


def test_submit_text_to_image_fills_reference_defaults_and_enqueues_the_id(gw):
    md = gw.key("t-defaults")
    sent_before = len(gw.queue.sent)
    job = gw.stub.SubmitJob(t2i(width=512), metadata=md)
    assert job.state == pb.JOB_STATE_QUEUED
    assert job.kind == pb.JOB_KIND_TEXT_TO_IMAGE
    # The newest job at the lowest priority is last in line: its position is the number of queued jobs.
    assert job.queue_position == gw.db(repo.count_queued)
    params = dict(job.params)
    assert params["width"] == 512 and params["height"] == 1024          # unset -> default
    assert params["steps"] == 8 and params["cfg_scale"] == 2.0 and params["block_length"] == 32
    assert params["decoder"] == "turbo" and params["decoder_steps"] == 8
    assert params["mode"] == "normal" and params["thinking_steps"] == 32
    assert dict(params["sprint"])["enabled"] is False
    # The queue producer is called with the job id (and priority) only.
    assert gw.queue.sent[sent_before:] == [(job.id, 0)]
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).id == job.id


def test_understand_and_edit_store_the_input_image_before_the_row(gw):
    md = gw.key("t-images")
    image = jpeg()
    und = gw.stub.SubmitJob(pb.SubmitJobRequest(understand=pb.UnderstandParams(image=image, question="What?")),
                            metadata=md)
    edit = gw.stub.SubmitJob(pb.SubmitJobRequest(edit=pb.EditParams(image=png(), instruction="make it blue",
                                                                     cfg_image_scale=1.5)), metadata=md)
    with gw.sessions() as s:
        from shared.repository import get_job
        und_row, edit_row = get_job(s, "t-images", und.id), get_job(s, "t-images", edit.id)
    assert und_row.input_keys == {"image": f"inputs/{und.id}/image.jpg"}
    assert gw.store.get(und_row.input_keys["image"]) == image
    assert edit_row.input_keys == {"image": f"inputs/{edit.id}/image.png"}
    assert "image" not in und_row.params and und_row.params["gen_length"] == 2048
    assert edit_row.params["cfg_text_scale"] == 4.0 and edit_row.params["cfg_image_scale"] == 1.5


def test_repeated_request_id_returns_the_existing_job_and_stores_nothing_new(gw):
    md = gw.key("t-idem")
    request = pb.SubmitJobRequest(request_id="req-1", understand=pb.UnderstandParams(image=png(), question="Q?"))
    first = gw.stub.SubmitJob(request, metadata=md)
    objects, sent = gw.objects(), len(gw.queue.sent)
    again = gw.stub.SubmitJob(request, metadata=md)
    assert again.id == first.id
    assert gw.objects() == objects and len(gw.queue.sent) == sent
    # The same request id from another tenant is a different job.
    other = gw.stub.SubmitJob(request, metadata=gw.key("t-idem-2"))
    assert other.id != first.id


def test_queue_position_follows_priority_then_age(gw):
    md = gw.key("t-queue")
    a = gw.stub.SubmitJob(t2i(), metadata=md)
    b = gw.stub.SubmitJob(t2i(), metadata=md)
    urgent = gw.stub.SubmitJob(pb.SubmitJobRequest(priority=9, text_to_image=pb.TextToImageParams(prompt="x")),
                               metadata=md)
    pos = {j.id: gw.stub.GetJob(pb.GetJobRequest(job_id=j.id), metadata=md).queue_position for j in (a, b, urgent)}
    assert pos[urgent.id] < pos[a.id] < pos[b.id]


def test_list_pages_newest_first_with_filters(gw):
    md = gw.key("t-list")
    ids = [gw.stub.SubmitJob(t2i(f"p{i}"), metadata=md).id for i in range(5)]
    und = gw.stub.SubmitJob(pb.SubmitJobRequest(understand=pb.UnderstandParams(image=png(), question="Q")),
                            metadata=md)
    seen, token = [], ""
    while True:
        page = gw.stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token), metadata=md)
        assert len(page.jobs) <= 2
        seen += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == [und.id, *reversed(ids)]
    only_und = gw.stub.ListJobs(pb.ListJobsRequest(kind=pb.JOB_KIND_UNDERSTAND), metadata=md)
    assert [j.id for j in only_und.jobs] == [und.id]
    none_running = gw.stub.ListJobs(pb.ListJobsRequest(state=pb.JOB_STATE_RUNNING), metadata=md)
    assert list(none_running.jobs) == []


def test_another_tenants_job_is_not_found(gw):
    owner, intruder = gw.key("t-owner"), gw.key("t-intruder")
    job = gw.stub.SubmitJob(t2i(), metadata=owner)
    for call, request in ((gw.stub.GetJob, pb.GetJobRequest(job_id=job.id)),
                          (gw.stub.CancelJob, pb.CancelJobRequest(job_id=job.id)),
                          (gw.stub.DeleteJob, pb.DeleteJobRequest(job_id=job.id))):
        with pytest.raises(grpc.RpcError) as err:
            call(request, metadata=intruder)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(gw.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=intruder))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert job.id not in [j.id for j in gw.stub.ListJobs(pb.ListJobsRequest(), metadata=intruder).jobs]
    # Untouched for its owner.
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=owner).state == pb.JOB_STATE_QUEUED
