"""GetJob shows each webhook delivery (issue 14): pending with its next try, delivered with the status code,
failed with the reason — as a dispatcher running beside the gateway records them."""

from __future__ import annotations

import threading
import time

from client import cli
from services.webhooks.addresses import AddressPolicy
from services.webhooks.dispatcher import Dispatcher, run_forever
from services.webhooks.sender import WebhookSender
from shared import attempts
from shared import repository as repo
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.webhooks.secrets import create_secret
from tests.webhooks.receiver import LoopbackReceiver

PENDING, DELIVERED, FAILED = (pb.WEBHOOK_DELIVERY_STATE_PENDING, pb.WEBHOOK_DELIVERY_STATE_DELIVERED,
                              pb.WEBHOOK_DELIVERY_STATE_FAILED)
STARTED, COMPLETED = pb.WEBHOOK_EVENT_STARTED, pb.WEBHOOK_EVENT_COMPLETED


def test_getjob_shows_each_delivery_as_the_dispatcher_records_it(make_gateway, monkeypatch, capsys):
    gw = make_gateway(webhook_allow_http=True, webhook_allow_networks=["127.0.0.0/8"], webhook_max_tries=2,
                      webhook_backoff_s=0.05, webhook_poll_interval_s=0.02)
    md = gw.key("hooked")
    gw.db(create_secret, "hooked")
    broken, working = LoopbackReceiver(status=500), LoopbackReceiver(status=202)
    stop = threading.Event()
    try:
        failing = gw.stub.SubmitJob(pb.SubmitJobRequest(
            text_to_image=pb.TextToImageParams(prompt="p"),
            webhook=pb.Webhook(url=broken.url(), events=[STARTED, COMPLETED])), metadata=md)
        cancelled = gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p"),
                                                          webhook=pb.Webhook(url=working.url())), metadata=md)
        attempt = gw.db(attempts.claim_job, failing.id, "w1", heartbeat_timeout_s=60)
        gw.db(attempts.fail_job, attempt, code="INTERNAL", message="boom")
        gw.db(repo.request_cancel, "hooked", cancelled.id)

        def get(job_id) -> pb.Job:
            return gw.stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=md)

        waiting = get(cancelled.id).webhook_deliveries
        assert [(d.event, d.state, d.tries) for d in waiting] == [(COMPLETED, PENDING, 0)]
        assert waiting[0].next_try_at.seconds > 0 and not waiting[0].HasField("finished_at")
        listed = gw.stub.ListJobs(pb.ListJobsRequest(), metadata=md).jobs
        assert listed and all(not job.webhook_deliveries for job in listed)  # GetJob's alone

        sender = WebhookSender(AddressPolicy(["127.0.0.0/8"]), timeout_s=2)
        dispatcher = Dispatcher(gw.settings, gw.sessions, sender)
        threading.Thread(target=run_forever, args=(dispatcher, stop), kwargs={"grace_s": 5}, daemon=True).start()
        deadline = time.monotonic() + 15
        while any(d.state == PENDING for job_id in (failing.id, cancelled.id) for d in get(job_id).webhook_deliveries):
            assert time.monotonic() < deadline
            time.sleep(0.05)

        [done] = get(cancelled.id).webhook_deliveries
        assert (done.event, done.state, done.status_code, done.tries, done.error) == (COMPLETED, DELIVERED, 202, 1, "")
        assert done.finished_at.seconds > 0 and done.id == working.requests[0].headers["webhook-id"]
        gave_up = get(failing.id).webhook_deliveries
        assert [(d.event, d.state, d.status_code, d.tries) for d in gave_up] == [
            (STARTED, FAILED, 500, 2), (COMPLETED, FAILED, 500, 2)]
        assert all(d.error == "answered HTTP 500 (given up after 2 tries)" for d in gave_up)
        # `llada get` shows them to a person too.
        monkeypatch.setenv("LLADA_SERVER", gw.address)
        monkeypatch.setenv("LLADA_API_KEY", dict(md)["x-api-key"])
        assert cli.main(["get", failing.id]) == 0
        shown = capsys.readouterr().out.splitlines()[1:]
        assert shown == [f"  webhook {event:<9} failed    {d.id}  tries=2  HTTP 500  {d.error}"
                         for event, d in zip(("started", "completed"), gave_up)]
    finally:
        stop.set()
        broken.close()
        working.close()
