"""Database work handed to a thread by the server's background workers.

`asyncio.to_thread` lets a cancelled caller go on at once while its thread still runs. When the
server stops, it cancels its workers and then disposes of its connection pool; a thread that was
still working gave its connection back after that, into a pool nobody closes any more, and the
connection was collected open. `finish_in_thread` waits for the thread before the cancellation
goes on, so the pool is disposed of only once nothing works on it. For bounded work only: a call
that must give up on a hung connection (leadership's checks) keeps its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def finish_in_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`asyncio.to_thread(fn, ...)`, but cancelled, it waits for `fn` to return first (its
    result, or its error, is then dropped, and the cancellation goes on)."""
    working = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(working)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await working
        raise
