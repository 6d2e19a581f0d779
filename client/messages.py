"""Builds SubmitJobRequest messages from plain Python arguments.

Only arguments that are not None are set, so everything left out takes the server default
(the proto fields are ``optional`` for exactly this reason).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from shared.proto.llada.serve.v1 import jobs_pb2 as pb

ImageInput = bytes | bytearray | memoryview | str | os.PathLike


def read_image(image: ImageInput) -> bytes:
    """Encoded image bytes from bytes or a file path (the server decodes and checks them)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    return Path(image).read_bytes()


def _enum_value(field: FieldDescriptor, value: Any) -> int:
    if isinstance(value, int):
        return value
    enum = field.enum_type
    # e.g. field "decoder" (enum Decoder) accepts "turbo" -> DECODER_TURBO
    prefix = enum.values[0].name.removesuffix("UNSPECIFIED")
    name = prefix + str(value).upper()
    if name not in enum.values_by_name:
        choices = ", ".join(v.name.removeprefix(prefix).lower() for v in enum.values[1:])
        raise ValueError(f"{field.name}: unknown value {value!r} (choose from {choices})")
    return enum.values_by_name[name].number


def fill_message(message, values: dict[str, Any]):
    """Sets the fields of ``message`` named in ``values``, skipping None; nested dicts fill sub-messages."""
    fields = message.DESCRIPTOR.fields_by_name
    for name, value in values.items():
        if value is None:
            continue
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise TypeError(f"unknown parameter {name!r} for {message.DESCRIPTOR.name} (known: {known})")
        field = fields[name]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            fill_message(getattr(message, name), dict(value))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            setattr(message, name, _enum_value(field, value))
        else:
            setattr(message, name, value)
    return message


# A webhook as the SDK takes it: the URL (completed events only), or {"url": …, "events": ["started", …]}.
WebhookInput = str | dict[str, Any] | None


def webhook_message(webhook: WebhookInput) -> pb.Webhook | None:
    if webhook is None:
        return None
    spec = {"url": webhook} if isinstance(webhook, str) else dict(webhook)
    unknown = set(spec) - {"url", "events"}
    if unknown:
        raise TypeError(f"unknown webhook option(s) {sorted(unknown)} (known: events, url)")
    field = pb.Webhook.DESCRIPTOR.fields_by_name["events"]
    return pb.Webhook(url=spec.get("url", ""), events=[_enum_value(field, e) for e in spec.get("events", ())])


def submit_request(kind: str, params: dict[str, Any], *, request_id: str | None, priority: int,
                   webhook: WebhookInput = None) -> pb.SubmitJobRequest:
    """``kind`` is the oneof member: "text_to_image", "understand" or "edit"."""
    request = pb.SubmitJobRequest(request_id=request_id or "", priority=priority, webhook=webhook_message(webhook))
    fill_message(getattr(request, kind), params)
    return request


def text_to_image_request(prompt: str, *, request_id=None, priority=0, webhook: WebhookInput = None,
                          **params) -> pb.SubmitJobRequest:
    return submit_request("text_to_image", {"prompt": prompt, **params},
                          request_id=request_id, priority=priority, webhook=webhook)


def understand_request(image: ImageInput, question: str, *, request_id=None, priority=0,
                       webhook: WebhookInput = None, **params) -> pb.SubmitJobRequest:
    return submit_request("understand", {"image": read_image(image), "question": question, **params},
                          request_id=request_id, priority=priority, webhook=webhook)


def edit_request(image: ImageInput, instruction: str, *, request_id=None, priority=0,
                 webhook: WebhookInput = None, **params) -> pb.SubmitJobRequest:
    return submit_request("edit", {"image": read_image(image), "instruction": instruction, **params},
                          request_id=request_id, priority=priority, webhook=webhook)
