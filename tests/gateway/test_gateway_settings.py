"""Gateway behaviour chosen by Settings: the WatchJob re-read interval and the shutdown grace period."""

import threading
import time

import grpc

from shared import attempts
from shared import repository as repo
from shared.objectstore import LocalObjectStore
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.settings import Settings
from tests.gateway.images_for_tests import png

TIMEOUT = 10


class SlowPutStoreDouble(LocalObjectStore):
    """A local store whose put() holds a SubmitJob in flight for `delay_s` or until `release` is set
    (signals `entered` first, `returned` once it is done)."""

    def __init__(self, root, delay_s: float):
        super().__init__(root)
        self.delay_s = delay_s
        self.entered = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()

    def put(self, key, data, content_type="application/octet-stream"):
        self.entered.set()
        self.release.wait(self.delay_s)
        super().put(key, data, content_type)
        self.returned.set()


def test_watch_rereads_the_database_at_the_configured_interval(make_gateway):
    gw = make_gateway(watch_poll_interval_s=0.1)
    md = gw.key("settings-poll")
    job = gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p")), metadata=md)
    assert Settings.model_fields["watch_poll_interval_s"].default == 2.0  # the default this test must beat
    # The stream's deadline is short of the default interval: only a re-read at the configured 0.1 s can answer.
    stream = gw.stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=1.5)
    assert next(stream).state == pb.JOB_STATE_QUEUED
    # Changed without any event: only the periodic re-read can find it.
    gw.db(attempts.claim_job, job.id, "worker-settings", heartbeat_timeout_s=60)
    assert next(stream).state == pb.JOB_STATE_RUNNING
    stream.cancel()


def test_stop_gives_calls_in_flight_the_configured_grace(make_gateway, tmp_path, loop_thread):
    store = SlowPutStoreDouble(tmp_path / "objects", delay_s=TIMEOUT)  # held until released
    gw = make_gateway(store=store, shutdown_grace_s=0.3)
    md = gw.key("settings-grace")
    outcome = {}

    def submit():
        request = pb.SubmitJobRequest(edit=pb.EditParams(image=png(), instruction="make it blue"))
        try:
            gw.stub.SubmitJob(request, metadata=md, timeout=TIMEOUT)
            outcome["code"] = grpc.StatusCode.OK
        except grpc.RpcError as err:
            outcome["code"] = err.code()
    caller = threading.Thread(target=submit, daemon=True)
    caller.start()
    assert store.entered.wait(TIMEOUT)
    loop_thread.run(gw.gateway.stop(), timeout=TIMEOUT)  # no argument: settings.shutdown_grace_s
    assert not store.returned.is_set()  # stop() cut the call off after the grace; it did not wait for the put
    caller.join(TIMEOUT)
    assert outcome["code"] in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    # The submit cut off by the shutdown still ends whole: its row, its input and its message.
    store.release.set()
    deadline = time.monotonic() + TIMEOUT
    while gw.job_count() == 0 or not gw.queue.sent:
        assert time.monotonic() < deadline, "the cut-off submit never completed"
        time.sleep(0.01)
    job = gw.db(repo.list_jobs, "settings-grace")[0][0]
    assert gw.queue.sent == [(job.id, 0)] and gw.objects() == sorted(job.input_keys.values())
