"""Translation of the wire messages (shared.proto) into the shared layer: params dicts, states, kinds, webhooks.
The other way, a Job row as its message, is shared.job_message (the webhook dispatcher needs it too)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from shared.jobs import INPUT_NAMES, PARAMS_FIELD, InvalidArgument, JobKind, JobState
from shared.proto.llada.serve.v1 import jobs_pb2 as pb
from shared.webhooks.subscription import WebhookSubscription, check_webhook

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


def state_from_pb(number: int) -> JobState | None:
    """None for UNSPECIFIED (= any); ValueError for a number this server does not know."""
    if number == pb.JOB_STATE_UNSPECIFIED:
        return None
    return JobState(pb.JobState.Name(number).removeprefix("JOB_STATE_"))


def kind_from_pb(number: int) -> JobKind | None:
    if number == pb.JOB_KIND_UNSPECIFIED:
        return None
    return JobKind(pb.JobKind.Name(number).removeprefix("JOB_KIND_"))


def webhook_from_pb(message: pb.SubmitJobRequest, *, allow_http: bool) -> WebhookSubscription | None:
    """The submit's webhook checked (InvalidArgument naming webhook.url / webhook.events), or None."""
    if not message.HasField("webhook"):
        return None
    names = []
    for number in message.webhook.events:
        value = pb.WebhookEvent.DESCRIPTOR.values_by_number.get(number)
        if value is None or number == pb.WEBHOOK_EVENT_UNSPECIFIED:
            raise InvalidArgument("webhook.events", f"unknown event {number}")
        names.append(value.name.removeprefix("WEBHOOK_EVENT_").lower())
    return check_webhook(message.webhook.url, names, allow_http=allow_http)
