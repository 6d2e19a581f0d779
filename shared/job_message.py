"""A Job row as the wire's `Job` message (shared.proto): what GetJob, ListJobs and WatchJob answer, and the
body of a webhook event (shared.webhooks.outbox snapshots it in the transaction of the change)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

from google.protobuf import json_format

from shared.db.models import Job, WebhookDelivery
from shared.jobs import JobKind, JobState
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.tracing import trace_id_of


def state_to_pb(state: str) -> int:
    return pb.JobState.Value("JOB_STATE_" + state)


def _timestamp(target, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value.astimezone(timezone.utc))


Presign = Callable[[str], str]


def job_to_pb(job: Job, *, queue_position: int = 0, presign: Presign | None = None,
              presign_expiry_s: int = 0) -> pb.Job:
    """``presign(key) -> url`` signs output URLs; None leaves them out (used for change detection)."""
    msg = pb.Job(
        id=job.id, request_id=job.request_id or "", kind=pb.JobKind.Value("JOB_KIND_" + job.kind),
        priority=job.priority, state=state_to_pb(job.state), queue_position=queue_position,
        attempts=job.attempts, cancel_requested=bool(job.cancel_requested), trace_id=trace_id_of(job.trace_context),
    )
    if job.stage:
        msg.stage = pb.Stage.Value("STAGE_" + job.stage.upper())
        msg.progress.step = job.progress_step
        msg.progress.total = job.progress_total
    for name, seconds in (job.timings or {}).items():
        if isinstance(seconds, (int, float)):
            msg.stage_seconds[name] = float(seconds)
    if job.error_code:
        msg.error.code = job.error_code
        msg.error.message = job.error_message or ""
        msg.error.field = job.error_field or ""
    _fill_outputs(msg, job, presign, presign_expiry_s)
    # Struct numbers are doubles: a seed above 2**53 is shown rounded (the stored value is exact).
    msg.params.update(job.params or {})
    _timestamp(msg.created_at, job.created_at)
    _timestamp(msg.started_at, job.started_at)
    _timestamp(msg.finished_at, job.finished_at)
    if job.webhook_url:
        msg.webhook.url = job.webhook_url
        msg.webhook.events.extend(pb.WebhookEvent.Value("WEBHOOK_EVENT_" + e.upper()) for e in job.webhook_events or ())
    return msg


def _fill_outputs(msg: pb.Job, job: Job, presign: Presign | None, expiry_s: int) -> None:
    if job.output_text:
        # A text-to-image job has no answer text; the worker stores its thinking pass there
        # (docs/model.md §3.3: result["thinking"]), so the two never collide.
        if job.kind == JobKind.TEXT_TO_IMAGE.value:
            msg.outputs.thinking_text = job.output_text
        else:
            msg.outputs.text = job.output_text
    if job.result_seed is not None:
        msg.outputs.seed = job.result_seed
    # URLs only for results that exist: a finished job's (EXPIRED ones have none left).
    signable = job.state == JobState.SUCCEEDED.value
    expires = datetime.now(timezone.utc) + timedelta(seconds=expiry_s)
    for name, key in sorted((job.output_keys or {}).items()):
        obj = msg.outputs.objects.add(name=name, object_key=str(key))
        if presign is not None and signable:
            obj.url = presign(str(key))
            if obj.url:
                obj.url_expires_at.FromDatetime(expires)


def job_json(message: pb.Job) -> str:
    """The proto's canonical JSON mapping (field names in lowerCamelCase), as a webhook body carries it."""
    return json_format.MessageToJson(message, indent=None)


def fill_deliveries(msg: pb.Job, deliveries: list[WebhookDelivery]) -> None:
    """The job's webhook deliveries (GetJob): each event, its state, tries and last answer."""
    for row in deliveries:
        item = msg.webhook_deliveries.add(
            id=row.id, event=pb.WebhookEvent.Value("WEBHOOK_EVENT_" + row.event.upper()),
            state=pb.WebhookDeliveryState.Value("WEBHOOK_DELIVERY_STATE_" + row.delivery_state.upper()),
            tries=row.tries, status_code=row.status_code or 0, error=row.error or "")
        _timestamp(item.created_at, row.created_at)
        _timestamp(item.finished_at, row.finished_at)
        if row.delivery_state == "pending":
            _timestamp(item.next_try_at, row.next_try_at)
