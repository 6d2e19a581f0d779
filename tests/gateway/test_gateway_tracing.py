"""One trace per job (shared.tracing): the submit starts it, every attempt continues it from the context stored
with the job, its stages, upload and terminal write are its spans; GetJob and the worker's log lines carry its id.
Recorded with the OpenTelemetry SDK's in-memory exporter (the `spans` fixture), through a real gateway and the
worker's JobRunner."""

from __future__ import annotations

import io
import logging
import time

import pytest
from opentelemetry.trace import SpanKind
from PIL import Image

from shared import attempts, tracing
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from workers.executor import JobOutput
from workers.tasks import JobRunner, WorkerContext

TIMINGS = {"tokenize": 0.01, "denoise": 0.02, "decode": 0.03}


class TimedExecutorDouble:
    """Spends the stage seconds it then reports (as a model measures them), and returns a small PNG."""

    def run(self, kind, params, inputs, *, progress, should_cancel, answer=None):
        time.sleep(sum(TIMINGS.values()))  # the work's duration, not a wait for anything
        out = io.BytesIO()
        Image.new("RGB", (8, 8)).save(out, format="PNG")
        return JobOutput(objects={"image.png": out.getvalue()}, timings=dict(TIMINGS), seed=1)


def worker_for(gw) -> JobRunner:
    return JobRunner(WorkerContext(settings=gw.settings, sessions=gw.sessions, store=gw.store, events=gw.events,
                                   executor=TimedExecutorDouble(), enqueue=lambda job_id, priority: None))


def submit(gw, md) -> pb.Job:
    return gw.stub.SubmitJob(pb.SubmitJobRequest(text_to_image=pb.TextToImageParams(prompt="a fox")), metadata=md)


def test_a_jobs_submit_attempts_stages_upload_and_end_are_one_trace(make_gateway, spans, caplog):
    gw = make_gateway()
    md = gw.key("traced")
    with caplog.at_level(logging.INFO, logger="llada.gateway"):
        job = submit(gw, md)
    assert len(job.trace_id) == 32 and int(job.trace_id, 16)
    submitted = [r for r in caplog.records if r.getMessage() == "job submitted"]
    assert [getattr(r, "trace_id", None) for r in submitted] == [job.trace_id]
    # The first attempt's worker vanishes (its lease runs out); the reaper re-queues; the next one finishes.
    lost = gw.db(attempts.claim_job, job.id, "gone", heartbeat_timeout_s=60)
    assert lost is not None
    requeued, _ = gw.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)
    assert requeued == [job.id]
    with caplog.at_level(logging.INFO, logger="llada.worker"):
        assert worker_for(gw).run(job.id) == "SUCCEEDED"

    finished = sorted(spans.get_finished_spans(), key=lambda s: s.start_time)
    names = [s.name for s in finished]
    assert names == ["llada.SubmitJob", "llada.run_job", "llada.tokenize", "llada.denoise", "llada.decode",
                     "llada.upload", "llada.finish"]
    assert {format(s.context.trace_id, "032x") for s in finished} == {job.trace_id}
    by_name = {s.name: s for s in finished}
    submit_span, run = by_name["llada.SubmitJob"], by_name["llada.run_job"]
    assert run.parent.span_id == submit_span.context.span_id
    assert submit_span.kind is SpanKind.SERVER and submit_span.attributes["llada.job_id"] == job.id
    assert run.attributes["llada.attempt"] == 2 and run.attributes["llada.outcome"] == "SUCCEEDED"
    for name in names[2:]:
        assert by_name[name].parent.span_id == run.context.span_id, name
    stages = [by_name[f"llada.{stage}"] for stage in TIMINGS]
    for stage, (name, seconds) in zip(stages, TIMINGS.items()):
        assert (stage.end_time - stage.start_time) == pytest.approx(seconds * 1e9, abs=1000), name
    assert all(a.end_time <= b.start_time for a, b in zip(stages, stages[1:]))  # one after another

    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).trace_id == job.trace_id
    claimed = [r for r in caplog.records if r.getMessage() == "job claimed"]
    assert claimed and all(getattr(r, "trace_id", None) == job.trace_id for r in claimed)


def test_without_tracing_a_job_has_no_trace_id_and_runs_the_same(make_gateway):
    gw = make_gateway()
    md = gw.key("untraced")
    job = submit(gw, md)
    assert job.trace_id == ""
    assert worker_for(gw).run(job.id) == "SUCCEEDED"
    assert gw.stub.GetJob(pb.GetJobRequest(job_id=job.id), metadata=md).trace_id == ""


def test_a_collector_endpoint_turns_tracing_on_and_the_spans_reach_it_over_otlp_http(tmp_path):
    from shared.settings import Settings
    from tests.webhooks.receiver import LoopbackReceiver

    assert tracing.setup_tracing(Settings(data_dir=tmp_path), "gateway") is None  # no endpoint: off
    with tracing.tracer().start_as_current_span("off") as span:
        assert tracing.traceparent(span) is None
    collector = LoopbackReceiver(status=200)
    try:
        provider = tracing.setup_tracing(Settings(data_dir=tmp_path, otlp_endpoint=collector.url("/v1/traces")),
                                         "gateway")
        with tracing.tracer().start_as_current_span("on") as span:
            parent = tracing.traceparent(span)
        assert parent and tracing.trace_id_of(parent) == format(span.get_span_context().trace_id, "032x")
        assert provider.force_flush(10_000)
        [export] = collector.wait_for(1, timeout_s=10)
        assert export.path == "/v1/traces" and export.headers["content-type"] == "application/x-protobuf"
        assert span.get_span_context().trace_id.to_bytes(16, "big") in export.body  # the span, in OTLP's protobuf
        provider.shutdown()
    finally:
        tracing.install(None)
        collector.close()
