"""Stopping asyncio tasks for sure, and finishing work a cancellation must not cut.

redis-py's asyncio client may swallow a cancellation that lands inside a
command, and work handed to a thread goes on when its awaiter is cancelled;
both helpers live here so every loop and every threaded write use one answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["stop_task", "to_the_end"]

T = TypeVar("T")


async def stop_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` until it ends (redis-py may swallow a cancellation inside a
    command), at most 5 s; its own failure is retrieved, not raised."""
    for _ in range(50):
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=0.1)
        if done:
            break
    if task.done() and not task.cancelled():
        task.exception()


async def to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` (a thread's job) to its end even when cancelled meanwhile.

    A cancellation then goes on once the job is done: a file write in a
    thread is never left half done (a temporary, a journal lock released
    while the append still runs).
    """
    job = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(job)
        except asyncio.CancelledError:
            if job.done():
                raise
            cancelled = True
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result
