"""The worker's spans (workers.tasks): one `llada.run_job` per attempt, continuing the trace stored with the job,
with the model's stages, the upload and the terminal write under it, each saying what it did."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from shared import attempts
from shared import repository as repo
from shared import tracing
from shared.jobs import JobKind


def submit_traced(harness, prompt: str) -> tuple[str, int]:
    """A job submitted inside a client's span, as the gateway stores it; returns it and that span's id."""
    with tracing.tracer().start_as_current_span("client") as client:
        job = harness.ctx.db(repo.submit_job, tenant="t1", request_id=None, kind=JobKind.TEXT_TO_IMAGE,
                             params={"prompt": prompt}, input_keys={}, trace_context=tracing.traceparent(client)).job
    return job.id, client.get_span_context().span_id


def worker_spans(spans) -> dict:
    return {s.name: s for s in spans.get_finished_spans() if s.name != "client"}


def test_a_succeeded_attempt_continues_the_jobs_trace_with_its_stages_upload_and_end(harness, spans):
    job_id, client_span_id = submit_traced(harness, "a red fox")

    assert harness.runner().run(job_id) == "SUCCEEDED"

    by_name = worker_spans(spans)
    assert sorted(by_name) == ["llada.decode", "llada.denoise", "llada.finish", "llada.run_job", "llada.upload"]
    run = by_name["llada.run_job"]
    assert run.kind is SpanKind.CONSUMER and run.parent.span_id == client_span_id
    assert dict(run.attributes) == {"llada.job_id": job_id, "llada.kind": "TEXT_TO_IMAGE", "llada.attempt": 1,
                                    "llada.outcome": "SUCCEEDED"}
    assert dict(by_name["llada.upload"].attributes) == {"llada.objects": 1}
    assert dict(by_name["llada.finish"].attributes) == {"llada.state": "SUCCEEDED"}
    for name, span in by_name.items():
        assert span.context.trace_id == run.context.trace_id, name
        if name != "llada.run_job":
            assert span.parent.span_id == run.context.span_id, name


def test_a_failed_attempt_records_its_outcome_and_no_upload(harness, spans):
    job_id, _ = submit_traced(harness, "crash")

    assert harness.runner().run(job_id) == "FAILED"

    by_name = worker_spans(spans)
    assert sorted(by_name) == ["llada.finish", "llada.run_job"]
    assert by_name["llada.run_job"].attributes["llada.outcome"] == "FAILED"
    assert dict(by_name["llada.finish"].attributes) == {"llada.state": "FAILED"}


def test_a_second_attempt_is_numbered_in_its_span(harness, spans):
    job_id, _ = submit_traced(harness, "a red fox")
    # The first attempt's worker vanishes; the reaper re-queues the job.
    assert harness.ctx.db(attempts.claim_job, job_id, "vanished", heartbeat_timeout_s=60) is not None
    requeued, _ = harness.ctx.db(attempts.reap_stale, heartbeat_timeout_s=0, max_attempts=3)
    assert requeued == [job_id]

    assert harness.runner().run(job_id) == "SUCCEEDED"

    assert worker_spans(spans)["llada.run_job"].attributes["llada.attempt"] == 2
