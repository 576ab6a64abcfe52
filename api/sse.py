"""The watch stream: a tenant's change log as Server-Sent Events, gap-free.

The tenant log is the source of truth and pub/sub only a wake-up. A stream
takes its records from the worker's feed of the tenant (see
:mod:`api.fanout`: one log read per wake-up for all streams of the tenant)
after catching up from the log itself when it resumes from an older
revision. When the log no longer holds the next revision (trimmed), the
revision went backwards or the epoch changed (tenant replaced), a ``reset``
event tells the client to re-read the full state; the stream then continues
from that revision. Each event's ``id`` is its revision, so
``Last-Event-ID`` resumes.

A stream restricted to some namespaces (``namespaces=``, or a
namespace-scoped token) sends the other namespaces' revisions as
``progress`` events (``{"revision": n}``, id ``n``), as etcd's progress
notifications, so its client's revision still advances. They are coalesced:
one per batch of records, and none when a visible event follows in the
batch (its id advances the client just as well).

:class:`EventStream` is a lean SSE response: one task per stream (the
disconnect listener), heartbeats sent by the stream itself, frames of a
record shared by every stream that may see it unmasked. Per connection the
server then holds little more than uvicorn's connection and this generator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any

import msgspec
from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from kvconf.exceptions import HistoryTrimmed, KvconfError, Unavailable
from kvconf.models import ChangeEvent
from kvconf.timeline import read_log

from .deps import Access, masker
from .fanout import Entry, Failure, FanOut, Item, Reset, Slot, Subscription, frame
from .metrics import Metrics, StreamState

__all__ = ["EventStream", "Outlet", "change_stream", "reset_frame"]

log = logging.getLogger("kvconf.api")
_PAGE = 500
Shows = Callable[[str], bool] | None


#: A heartbeat: an SSE comment, ignored by clients, keeps proxies and sockets alive.
PING = b": ping\r\n\r\n"


def _event(name: str, revision: int, data: Any) -> bytes:
    return frame(name, msgspec.json.encode(data), revision)


def reset_frame(tenant: str, revision: int, reason: str) -> bytes:
    """The ``reset`` event: re-read the full state at ``revision``."""
    return _event("reset", revision, {"tenant": tenant, "revision": revision, "reason": reason})


async def _render(access: Access, item: Item, shows: Shows) -> bytes | None:
    """The SSE of one record for this caller (None: nothing of it is visible)."""
    from .routes.history import mask_event, visible_event

    event = item.event
    shown = visible_event(event, shows)
    if shown is None:
        return None
    if shown is event and not await _needs_mask(access, event):
        return item.frame
    return _event(shown.type, shown.revision, await mask_event(access, shown))


async def _needs_mask(access: Access, event: ChangeEvent) -> bool:
    if access.secrets:
        return False
    for change in event.changes:
        if (await masker(access, event.namespace_of(change))).hides(change.key):
            return True
    return False


def _stale(access: Access, seen: int, generation: Callable[[], int]) -> bool:
    """True when the caller must be re-checked before a delivery."""
    expires = access.principal.expires
    return generation() != seen or (expires is not None and time.time() >= expires)


class _Rest:
    """The rest of a coroutine that suspended while driven by hand: awaited once, in a task."""

    __slots__ = ("_coro", "_waiting")

    def __init__(self, coro: Generator[Any, Any, None], waiting: Any) -> None:
        self._coro = coro
        self._waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, waiting = self._coro, self._waiting
        while True:
            try:
                value = yield waiting
            except BaseException as exc:  # cancellation too: the coroutine sees it
                try:
                    waiting = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting = coro.send(value)
                except StopIteration:
                    return

    def close(self) -> None:
        """Abandon it (the response is over)."""
        self._coro.close()


#: Where the app keeps the server's own ``send`` for the request (see :class:`api.app.App`).
SERVER_SEND = "kvconf.server_send"


def _chunked_transport(send: Send) -> Any:
    """uvicorn's httptools request cycle behind ``send`` when it writes chunked bodies, else None.

    Its transport takes a stream's frames as they are, framed as HTTP/1.1
    chunks, without an ASGI message per frame: the feed writes to thousands
    of parked streams per record, and at that count the send coroutine and
    its message are a fifth of the work. Any other server (h11, a test
    client) or a cycle without the attributes relied on gets the ASGI send.
    """
    cycle = getattr(send, "__self__", None)
    if cycle is None or type(cycle).__module__ != "uvicorn.protocols.http.httptools_impl":
        return None
    needed = ("transport", "flow", "chunked_encoding", "disconnected", "response_complete")
    if not all(hasattr(cycle, name) for name in needed) or cycle.chunked_encoding is not True:
        return None
    return cycle


class Outlet:
    """A stream's response, written from outside the stream's task while the stream is parked.

    :class:`EventStream` opens it once the response has started. ``write``
    puts a chunk on uvicorn's transport itself when it can (see
    :func:`_chunked_transport`), else runs the server's ASGI ``send``
    coroutine by hand: it normally finishes at once (the server puts the
    bytes on the transport), so a feed serves thousands of parked streams
    without waking their tasks. Both skip the app's middlewares, which only
    look at the response's start. When the send must wait (a client reading
    slowly), its rest is kept in ``pending`` and the stream's task finishes
    it before it sends anything else.
    """

    __slots__ = ("_cycle", "_gone", "_send", "pending")

    def __init__(self) -> None:
        self._send: Send | None = None
        self._cycle: Any = None
        self._gone: asyncio.Future[None] | None = None
        self.pending: _Rest | None = None

    def open(self, send: Send, gone: asyncio.Future[None]) -> None:
        """Write through the server's ``send`` until ``gone`` is done (the client went away)."""
        self._send, self._gone = send, gone
        self._cycle = _chunked_transport(send)

    def close(self) -> None:
        """No more writes (the response is over)."""
        self._send = self._cycle = None
        if self.pending is not None:
            self.pending.close()
            self.pending = None

    @property
    def ready(self) -> bool:
        """True when ``write`` may send now."""
        gone = self._gone
        return self._send is not None and self.pending is None and not (gone and gone.done())

    def write(self, chunk: bytes) -> bool:
        """Send ``chunk`` now (True), or nothing at all (False: the stream's task must)."""
        if not self.ready:
            return False
        if not chunk:
            return True  # an empty chunk would end the response on the wire
        cycle = self._cycle
        if cycle is not None:
            if cycle.disconnected or cycle.response_complete:
                self._send = self._cycle = None
                return False
            if not cycle.flow.write_paused:
                cycle.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                return True
        assert self._send is not None
        message = {"type": "http.response.body", "body": chunk, "more_body": True}
        coro = self._send(message).__await__()
        try:
            waiting = coro.send(None)
        except StopIteration:
            return True
        except Exception:  # the client went away: the task's own send ends the stream
            self._send = self._cycle = None
            return False
        self.pending = _Rest(coro, waiting)
        return True

    async def drain(self) -> None:
        """Finish a write that had to wait."""
        if self.pending is not None:
            try:
                await self.pending
            finally:
                self.pending = None


class _Cursor:
    """A stream's position and what it has sent."""

    __slots__ = ("last", "pending", "sent")

    def __init__(self, last: int) -> None:
        self.last = last
        self.sent = 0
        self.pending: int | None = None  # a progress revision not yet sent


async def _read_after(access: Access, after: int) -> tuple[int, list[ChangeEvent] | str]:
    """The current revision and the log page after ``after``, or why a reset is due."""
    current = await access.store.revision(access.tenant)
    if current < after:
        return current, "revision went backwards"
    try:
        return current, await read_log(access.store, access.tenant, after, limit=_PAGE)
    except HistoryTrimmed as exc:
        return current, exc.message


async def _catch_up(
    access: Access, cursor: _Cursor, shows: Shows, starting: asyncio.Semaphore
) -> AsyncIterator[bytes]:
    """Records after the cursor from the log itself (resumes, overflowed inboxes)."""
    while True:
        async with starting:  # the stream's reads wait for a pool connection
            current, page = await _read_after(access, cursor.last)
        if isinstance(page, str):
            cursor.last, cursor.pending = current, None
            yield reset_frame(access.tenant, current, page)
            return
        for event in page:
            sse = await _one(access, cursor, Item(event), shows)
            if sse is not None:
                yield sse
        if len(page) < _PAGE:
            return


async def _one(access: Access, cursor: _Cursor, item: Item, shows: Shows) -> bytes | None:
    """The frame of one record for this stream (None: already sent, or not visible)."""
    event = item.event
    if event.revision <= cursor.last:
        return None  # caught up from the log already
    cursor.last = event.revision
    rendered = await _render(access, item, shows)
    cursor.pending = event.revision if rendered is None else None
    return rendered


def _progress(cursor: _Cursor) -> bytes | None:
    if cursor.pending is None:
        return None
    revision, cursor.pending = cursor.pending, None
    return _event("progress", revision, {"revision": revision})


async def change_stream(
    access: Access,
    start: int,
    metrics: Metrics,
    fanout: FanOut,
    slot: Slot,
    *,
    namespaces: set[str] | None = None,
    max_events: int | None = None,
    recheck: Callable[[], Awaitable[Access]] | None = None,
    recheck_every: float = 5.0,
    heartbeat: float = 5.0,
    generation: Callable[[], int] = lambda: 0,
    outlet: Outlet | None = None,
    state: StreamState | None = None,
) -> AsyncIterator[bytes]:
    """Events after revision ``start``, masked and filtered for the caller.

    ``namespaces`` restricts the stream (the caller's own namespace filter
    applies too; ``_defaults`` always passes, as effective values need it).
    ``recheck`` re-authenticates the caller every ``recheck_every`` seconds:
    a revoked or expired token ends the stream with an ``error`` event, and a
    narrowed right (no more ``secrets``) applies to the events after it. It
    also runs before a delivery when ``generation()`` changed (a token was
    revoked in this process) or the caller's token has expired, so neither
    receives the next event; otherwise a delivery costs no check.
    ``slot`` is the stream's reserved place, given back when it ends. An
    idle stream sends a heartbeat comment every ``heartbeat`` seconds.

    With ``outlet`` (the response's, see :class:`EventStream`), a parked
    stream that sees every record unmasked and unfiltered lets the feed send
    the records' shared frames itself, several records in one write, without
    waking the stream's task; anything else (a reset, a record to mask or
    filter, a caller to re-check, a client that reads slowly) wakes the task,
    which goes on from where the feed's writes left it.

    ``state`` (default: a new one) is where the stream notes the revision it
    has sent, for metrics and the fleet report.
    """
    tenant = access.tenant
    metrics.sse_streams.inc()
    state = state if state is not None else StreamState(tenant)
    metrics.streams[id(state)] = state
    sub = Subscription()
    feed = None
    cursor = _Cursor(start)

    def shows_for(access: Access) -> Shows:
        if namespaces is None and access.visible is None:
            return None
        return lambda ns: (
            ns == "_defaults" or (access.shows(ns) and (namespaces is None or ns in namespaces))
        )

    shows = shows_for(access)
    next_check = time.monotonic() + recheck_every
    next_ping = time.monotonic() + heartbeat
    seen = generation()

    def done() -> bool:
        return max_events is not None and cursor.sent >= max_events

    def direct() -> bool:
        """True when the feed may send this stream's records itself."""
        return outlet is not None and outlet.ready and shows is None and access.secrets

    def deliver(entries: list[Entry]) -> bool:
        """The feed's entries sent from the feed's own call (False: the task takes them)."""
        if not direct() or _stale(access, seen, generation):
            return False
        assert outlet is not None
        last = cursor.last
        frames = []
        for entry in entries:
            if not isinstance(entry, Item):
                return False
            if entry.event.revision > last:  # else: caught up from the log already
                frames.append(entry.frame)
                last = entry.event.revision
        if max_events is not None and cursor.sent + len(frames) >= max_events:
            return False  # the task ends the stream after the last one
        if frames:
            if not outlet.write(frames[0] if len(frames) == 1 else b"".join(frames)):
                return False
            cursor.last = last
            cursor.sent += len(frames)
            fanout.direct_writes += len(frames)
            state.update(last, last)
        if outlet.pending is None:
            sub.direct = deliver
        else:
            sub.wake.set()  # the task finishes the write before anything else
        return True

    try:
        state.update(cursor.last, cursor.last)  # no lag before the stream knows where it is
        feed = await fanout.join(tenant, sub)
        if feed.last is None or cursor.last < feed.last:
            async for sse in _catch_up(access, cursor, shows, fanout.starting):
                yield sse
                cursor.sent += 1
                if done():
                    return
        while True:
            if recheck is not None and (
                time.monotonic() >= next_check or (sub.inbox and _stale(access, seen, generation))
            ):
                seen = generation()
                try:
                    access = await recheck()
                    shows = shows_for(access)
                except Unavailable:
                    pass  # Redis is away: keep the rights last seen, check again soon
                next_check = time.monotonic() + recheck_every
            if sub.overflowed:
                sub.overflowed = False
                async for sse in _catch_up(access, cursor, shows, fanout.starting):
                    yield sse
                    cursor.sent += 1
                    if done():
                        return
            while sub.inbox:
                entry = sub.inbox.popleft()
                if isinstance(entry, Failure):
                    yield frame("error", msgspec.json.encode(entry.error))
                    return
                if isinstance(entry, Reset):
                    cursor.last, cursor.pending = entry.revision, None
                    yield reset_frame(tenant, entry.revision, entry.reason)
                    cursor.sent += 1
                else:
                    rendered = await _one(access, cursor, entry, shows)
                    if rendered is not None:
                        yield rendered
                        cursor.sent += 1
                if done():
                    return
            progress = _progress(cursor)
            if progress is not None:
                yield progress
                cursor.sent += 1
                if done():
                    return
            state.update(cursor.last, feed.last if feed.last is not None else cursor.last)
            sub.wake.clear()
            if sub.inbox or sub.overflowed:
                continue
            now = time.monotonic()
            if now >= next_ping:
                yield PING
                next_ping = now + heartbeat
            until = min(next_ping, next_check) if recheck is not None else next_ping
            sub.direct = deliver if direct() else None
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, until - now)):
                        await sub.wake.wait()
            finally:
                sub.direct = None
            if outlet is not None:
                await outlet.drain()
    except (KvconfError, RedisError) as exc:
        error = exc.to_dict() if isinstance(exc, KvconfError) else {"code": "unavailable"}
        yield frame("error", msgspec.json.encode(error))
    finally:
        metrics.sse_streams.dec()
        metrics.streams.pop(id(state), None)
        slot.release()
        if feed is not None:
            await fanout.leave(feed, sub)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream(Response):
    """A lean Server-Sent Events response over an iterator of ready frames.

    One task per stream listens for the client's disconnect; the stream
    itself sends heartbeats, so a gone client is noticed within a heartbeat.
    With ``outlet`` (given to the stream too), the stream's feed may also
    write to the response between the stream's own frames.
    """

    media_type = "text/event-stream"

    def __init__(
        self, stream: AsyncIterator[bytes], status_code: int = 200, *, outlet: Outlet | None = None
    ) -> None:
        self.stream = stream
        self.outlet = outlet
        self.status_code = status_code  # FastAPI reads its default for the document
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the frames until the stream ends or the client goes away."""
        gone = asyncio.ensure_future(_disconnected(receive))
        outlet = self.outlet
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if outlet is not None:
                outlet.open(scope.get(SERVER_SEND, send), gone)
            async for chunk in self.stream:
                if gone.done():
                    return
                if outlet is not None:
                    await outlet.drain()
                    if outlet.write(chunk):  # the stream's own frames skip the middlewares too
                        await outlet.drain()  # a paused transport: done before the next wait
                        continue
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not gone.done():
                if outlet is not None:
                    await outlet.drain()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-send
        finally:
            if outlet is not None:
                outlet.close()
            gone.cancel()
            aclose = getattr(self.stream, "aclose", None)
            if aclose is not None:
                await aclose()
