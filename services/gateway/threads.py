"""Blocking work in threads whose end is known even when the awaiting coroutine is cancelled.

`asyncio.to_thread` in a cancelled task raises at once while its thread runs on: the code after it
cannot tell whether an insert committed or a decode still holds its memory. These helpers wait for it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools


def in_thread(fn, *args, **kwargs) -> asyncio.Future:
    """``fn`` in the loop's default executor, as a plain future: not a task, so neither a caller's
    cancellation nor the loop's shutdown cancels it — it ends when the thread does. It runs in a copy of the
    caller's context, as `asyncio.to_thread` would (the current trace span, the call's tenant)."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(None, call)


async def run_to_end(fn, *args, **kwargs):
    """``fn`` in a thread. A cancelled caller still waits for the thread to end (a thread cannot be
    stopped), so what the thread holds — a decode's memory, say — is gone before the cancellation goes on."""
    future = in_thread(fn, *args, **kwargs)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # the caller is gone and its outcome with it: retrieved, not reported
        raise
