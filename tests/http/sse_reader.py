"""Reads a server-sent event stream the way a browser's EventSource does (the WHATWG rules the tests need: event,
data, id, comments, blank-line dispatch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Event:
    event: str
    data: str
    id: str | None


def events(lines) -> "iter[Event]":
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield Event(event, "\n".join(data), event_id)
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
