"""Reads a server-sent event stream the way a browser's EventSource does (the WHATWG rules the tests need: event,
data, id, retry, comments, blank-line dispatch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Event:
    event: str
    data: str
    id: str | None
    retry_ms: int | None  # the reconnection time the stream set so far (its last `retry` field)


def events(lines) -> "iter[Event]":
    event, data, event_id, retry_ms = "message", [], None, None
    for line in lines:
        if line == "":
            if data:
                yield Event(event, "\n".join(data), event_id, retry_ms)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value
        elif name == "retry" and value.isdigit():
            retry_ms = int(value)
