"""The watch stream: a tenant's change log as Server-Sent Events, gap-free.

The tenant log is the source of truth and pub/sub only a wake-up: after each
message (or every ``poll`` seconds when none comes) the stream reads the log
after the last revision it sent, so a lost message delays an event but never
drops it. When the log no longer holds the next revision (trimmed) or the
revision went backwards (tenant replaced), a ``reset`` event tells the client
to re-read the full state; the stream then continues from the current
revision. Each event's ``id`` is its revision, so ``Last-Event-ID`` resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError
from sse_starlette import ServerSentEvent

from kvconf.exceptions import HistoryTrimmed, KvconfError
from kvconf.store import tenant_keys
from kvconf.timeline import read_log

from .deps import Access
from .metrics import Metrics, StreamState

__all__ = ["change_stream"]

log = logging.getLogger("kvconf.api")
_PAGE = 500


def _event(name: str, revision: int, data: Any) -> ServerSentEvent:
    return ServerSentEvent(data=msgspec.json.encode(data).decode(), event=name, id=str(revision))


async def _subscribe(access: Access) -> Any:
    try:
        pubsub = access.store.redis.pubsub()
        await pubsub.ssubscribe(tenant_keys(access.tenant).changes_channel)
    except (RedisError, AttributeError, TypeError) as exc:
        log.info("watch stream falls back to polling: %s", exc)
        return None
    return pubsub


async def _wait(pubsub: Any, poll: float) -> None:
    if pubsub is None:
        await asyncio.sleep(min(poll, 0.5))
        return
    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=poll)
    while message is not None:  # drain: one log read serves a burst of messages
        message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=0)


async def change_stream(
    access: Access,
    start: int | None,
    metrics: Metrics,
    *,
    max_events: int | None = None,
    poll: float = 1.0,
    recheck: Callable[[], Awaitable[Access]] | None = None,
    recheck_every: float = 5.0,
) -> AsyncIterator[ServerSentEvent]:
    """Events after revision ``start`` (None: from now), masked for the caller.

    ``recheck`` re-authenticates the caller every ``recheck_every`` seconds: a
    revoked token ends the stream with an ``error`` event, and a narrowed
    right (no more ``secrets``) applies to the events after it.
    """
    from .routes.history import mask_event

    store, tenant = access.store, access.tenant
    metrics.sse_streams.inc()
    state = StreamState(tenant)
    metrics.streams[id(state)] = state
    pubsub = await _subscribe(access)
    sent = 0
    next_check = time.monotonic() + recheck_every
    try:
        last = start if start is not None else await store.revision(tenant)
        state.update(last, last)
        while True:
            if recheck is not None and time.monotonic() >= next_check:
                access = await recheck()
                next_check = time.monotonic() + recheck_every
            current = await store.revision(tenant)
            if current < last:
                yield _event("reset", current, {"tenant": tenant, "revision": current,
                                                "reason": "revision went backwards"})  # fmt: skip
                last, sent = current, sent + 1
            else:
                try:
                    events = await read_log(store, tenant, last, limit=_PAGE)
                except HistoryTrimmed as exc:
                    yield _event("reset", current, {"tenant": tenant, "revision": current,
                                                    "reason": exc.message})  # fmt: skip
                    last, sent = current, sent + 1
                    events = []
                for event in events:
                    yield _event(event.type, event.revision, await mask_event(access, event))
                    last, sent = event.revision, sent + 1
                    if max_events is not None and sent >= max_events:
                        return
                state.update(last, current)
                if len(events) == _PAGE:
                    continue
            if max_events is not None and sent >= max_events:
                return
            await _wait(pubsub, poll)
    except (KvconfError, RedisError) as exc:
        error = exc.to_dict() if isinstance(exc, KvconfError) else {"code": "unavailable"}
        yield ServerSentEvent(data=msgspec.json.encode(error).decode(), event="error")
    finally:
        metrics.sse_streams.dec()
        metrics.streams.pop(id(state), None)
        if pubsub is not None:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()
