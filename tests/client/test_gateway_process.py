"""``python -m services.gateway`` as an operator runs it: JSON logs, the Prometheus endpoint, and a
graceful SIGTERM that ends open watch streams (clients resume) instead of waiting on them."""

import json
import signal
import threading
import time
import urllib.request

import grpc
import pytest

from tests.client.gateway_process import start_gateway_process
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.proto.llada.serve.v1 import jobs_pb2_grpc as pb_grpc

pytestmark = pytest.mark.timeout(90)


@pytest.mark.slow
def test_metrics_endpoint_json_logs_and_graceful_sigterm(tmp_path):
    gateway = start_gateway_process(tmp_path)
    try:
        md = (("x-api-key", gateway.api_key),)
        with grpc.insecure_channel(gateway.address) as channel:
            stub = pb_grpc.JobServiceStub(channel)
            job = stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="p")), metadata=md)
            with pytest.raises(grpc.RpcError):
                stub.GetJob(pb.GetJobRequest(job_id="00000000-0000-4000-8000-000000000000"), metadata=md)
            with urllib.request.urlopen(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=5) as reply:
                metrics = reply.read().decode()
            assert 'llada_gateway_requests_total{code="OK",method="SubmitJob"} 1.0' in metrics
            assert 'llada_jobs{state="QUEUED"} 1.0' in metrics

            stream = stub.WatchJob(pb.WatchJobRequest(job_id=job.id), metadata=md, timeout=30)
            assert next(stream).state == pb.JOB_STATE_QUEUED
            ended = threading.Event()
            threading.Thread(target=lambda: (list(stream), ended.set()), daemon=True).start()
            started = time.monotonic()
            code = gateway.stop(signal.SIGTERM, timeout=30)
            assert code == 0
            assert time.monotonic() - started < 8  # did not sit out the grace period on the open stream
            assert ended.wait(5)  # the watch ended cleanly; a client re-calls WatchJob to resume
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
    lines = [json.loads(line) for line in gateway.log_path.read_text().splitlines() if line.strip()]
    messages = [entry["msg"] for entry in lines]
    assert "gateway listening" in messages and "shutting down" in messages and messages[-1] == "stopped"
    submitted = next(entry for entry in lines if entry["msg"] == "job submitted")
    assert submitted["job_id"] == job.id and submitted["tenant"] == "default" and submitted["level"] == "info"
    access = [e for e in lines if e["msg"] == "rpc"]
    assert {"method": "GetJob", "code": "NOT_FOUND"}.items() <= access[0].items()  # refusals are logged
