"""Channel construction shared by the sync and the asyncio client: target, TLS, message-size limits."""

from __future__ import annotations

import os
from pathlib import Path

import grpc

DEFAULT_SERVER = "127.0.0.1:50051"
# Large enough for an input image of the server's default size limit plus the request around it.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
API_KEY_METADATA_KEY = "x-api-key"


def resolve_target(server: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Explicit values first, then $LLADA_SERVER / $LLADA_API_KEY, then the local default server.

    ``api_key=None`` means "the environment's key"; an explicit ``""`` means no key at all (a caller
    that wants to be anonymous must not silently send the key of whoever runs it)."""
    if api_key is None:
        api_key = os.environ.get("LLADA_API_KEY")
    return server or os.environ.get("LLADA_SERVER") or DEFAULT_SERVER, api_key or None


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


def _read_pem(value: bytes | str | os.PathLike | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def credentials(root_certificates=None) -> grpc.ChannelCredentials:
    """TLS credentials; ``root_certificates`` (PEM bytes or a path) defaults to the system roots."""
    return grpc.ssl_channel_credentials(root_certificates=_read_pem(root_certificates))


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return ((API_KEY_METADATA_KEY, api_key),) if api_key else ()
