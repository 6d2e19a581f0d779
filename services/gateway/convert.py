"""Translation between the wire messages (shared.proto) and the shared layer (params dicts, Job rows)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from google.protobuf.descriptor import FieldDescriptor

from shared.db.models import Job
from shared.jobs import INPUT_NAMES, PARAMS_FIELD, JobKind, JobState
from shared.proto.llada.serve.v1 import jobs_pb2 as pb

# SubmitJobRequest's params oneof member -> job kind.
KIND_BY_FIELD = {field: kind for kind, field in PARAMS_FIELD.items()}
# Fields of the params messages that are inputs stored as objects, not parameters.
INPUT_FIELDS = frozenset(name for names in INPUT_NAMES.values() for name in names)


def _enum_to_param(field: FieldDescriptor, number: int) -> str | int:
    value = field.enum_type.values_by_number.get(number)
    if value is None:
        return number  # an unknown number: validation refuses it and names the field
    prefix = field.enum_type.values[0].name.removesuffix("UNSPECIFIED")
    return value.name.removeprefix(prefix).lower()


def params_to_dict(message) -> dict[str, Any]:
    """The fields the client set, as the shared layer's params dict (unset = default)."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.name in INPUT_FIELDS:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            out[field.name] = params_to_dict(value)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            out[field.name] = _enum_to_param(field, value)
        else:
            out[field.name] = value
    return out


def state_to_pb(state: str) -> int:
    return pb.JobState.Value("JOB_STATE_" + state)


def state_from_pb(number: int) -> JobState | None:
    """None for UNSPECIFIED (= any); ValueError for a number this server does not know."""
    if number == pb.JOB_STATE_UNSPECIFIED:
        return None
    return JobState(pb.JobState.Name(number).removeprefix("JOB_STATE_"))


def kind_from_pb(number: int) -> JobKind | None:
    if number == pb.JOB_KIND_UNSPECIFIED:
        return None
    return JobKind(pb.JobKind.Name(number).removeprefix("JOB_KIND_"))


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
        attempts=job.attempts, cancel_requested=bool(job.cancel_requested),
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
