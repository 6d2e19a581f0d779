"""A job's webhook subscription as a submit gives it: the URL checked and the events named, or
`InvalidArgument` naming `webhook.url` / `webhook.events`. Where the URL may point (no private address) is
judged again at delivery time, when it is resolved: a name can change what it resolves to after the submit."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.jobs import InvalidArgument

MAX_URL_CHARS = 2048
EVENTS = ("started", "progress", "completed")
DEFAULT_EVENTS = ("completed",)


@dataclass(frozen=True)
class WebhookSubscription:
    url: str
    events: tuple[str, ...]


def check_webhook(url: str, events: list[str] | tuple[str, ...], *, allow_http: bool) -> WebhookSubscription:
    """`events` by name ("started", "progress", "completed"); none given means completed only."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument("webhook.url", f"is {len(url)} characters long; the limit is {MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise InvalidArgument("webhook.url", f"is not a valid URL: {err}") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidArgument("webhook.url", f"must be an absolute {' or '.join(schemes)} URL"
                                             + ("" if allow_http else " (this deployment refuses http)"))
    if not parts.hostname:
        raise InvalidArgument("webhook.url", "names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("webhook.url", "must not carry user:password (it would be stored and logged)")
    if port == 0:
        raise InvalidArgument("webhook.url", "port 0 cannot be called")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidArgument("webhook.url", "must not contain spaces or control characters")
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise InvalidArgument("webhook.events", f"unknown event {unknown[0]!r}; expected some of {list(EVENTS)}")
    if len(set(events)) != len(events):
        raise InvalidArgument("webhook.events", "names an event twice")
    chosen = tuple(event for event in EVENTS if event in events) or DEFAULT_EVENTS
    return WebhookSubscription(url=url, events=chosen)
