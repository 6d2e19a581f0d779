"""Wrapping grpc.aio method handlers, for the interceptors (auth, metrics).

An interceptor gets a ``grpc.RpcMethodHandler`` and returns one; these helpers rebuild it around a
wrapper of its behaviour, for the two handler types JobService uses (unary-unary, unary-stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc

Unary = Callable[[object, grpc.aio.ServicerContext], Awaitable[object]]
Streaming = Callable[[object, grpc.aio.ServicerContext], AsyncIterator[object]]


def wrap_handler(handler: grpc.RpcMethodHandler, *, unary: Callable[[Unary], Unary],
                 streaming: Callable[[Streaming], Streaming]) -> grpc.RpcMethodHandler:
    """``unary`` / ``streaming`` take the original behaviour and return the wrapped one."""
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary(handler.unary_unary), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            streaming(handler.unary_stream), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
    # Client-streaming methods (none in our services) pass through unwrapped.
    return handler


def aborting_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that refuses the call with ``code``."""

    def unary(_behaviour: Unary) -> Unary:
        async def refuse(request, context):
            await context.abort(code, message)
        return refuse

    def streaming(_behaviour: Streaming) -> Streaming:
        async def refuse(request, context):
            await context.abort(code, message)
            yield  # pragma: no cover - makes this an async generator
        return refuse

    return wrap_handler(handler, unary=unary, streaming=streaming)
