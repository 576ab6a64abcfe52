"""Fan-out of tenant change events to every watch stream of one API worker.

One :class:`TenantFeed` per tenant per worker follows the tenant's log for all
of the worker's streams of that tenant: it listens on the worker's one shared
pub/sub connection per Redis server (kvconf's watch hub, the one the read
cache's watchers use too), reads the log once per wake-up and hands the new
records to each stream's inbox. Each stream masks and filters for its own
caller. When no message comes, the feed checks the tenant's revision and
epoch every ``poll`` seconds (one ``MGET``): the liveness check is per tenant,
so an idle stream costs Redis nothing.

Gap-free: a stream registers with the feed before it catches up from the log
itself (when it starts behind the feed), then takes the feed's records after
its own last revision. A feed that sees the log trimmed past it, the revision
go backwards or the epoch change hands its streams a :class:`Reset`. A stream
whose inbox overflows (a slow client) drops it and catches up from the log. A stream
that stopped waiting for a new feed to prime (Redis slow to answer) reads the
log again once the feed has primed.

:class:`FanOut` also counts the worker's streams: past ``max_streams`` a new
one is refused with :class:`~api.errors.TooManyStreams` (503, ``Retry-After``)
before its response starts, never left open and silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from redis.exceptions import RedisError

from kvconf._codec import as_text
from kvconf._tasks import stop_task
from kvconf._watch import registry
from kvconf._watch.hub import SharedHub
from kvconf.exceptions import HistoryTrimmed, KvconfError, Unavailable
from kvconf.models import ChangeEvent
from kvconf.store import Store, tenant_keys
from kvconf.timeline import read_log

from .errors import TooManyStreams

__all__ = ["Direct", "FanOut", "Item", "Reset", "Slot", "Subscription", "TenantFeed", "frame"]

log = logging.getLogger("kvconf.api")
_PAGE = 500
#: Records a stream may have waiting before it drops them and reads the log itself.
INBOX_LIMIT = 10_000
#: Streams served between two turns of the event loop during a broadcast.
_SLICE = 128


def frame(name: str, data: bytes, revision: int | None = None) -> bytes:
    """One Server-Sent Event as sent (``data`` is one line of JSON)."""
    head = b"" if revision is None else b"id: %d\r\n" % revision
    return head + b"event: " + name.encode() + b"\r\ndata: " + data + b"\r\n\r\n"


class Reset(msgspec.Struct, frozen=True):
    """The stream's clients must re-read the full state at ``revision``."""

    revision: int
    reason: str


class Failure(msgspec.Struct, frozen=True):
    """The tenant cannot be followed any more (deleted): streams end with an error."""

    error: dict[str, Any]


class Item:
    """One log record as broadcast, with its unmasked SSE frame encoded once for all streams."""

    __slots__ = ("_frame", "event")

    def __init__(self, event: ChangeEvent) -> None:
        self.event = event
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        """The record's SSE frame, unmasked (for callers that may see all of it)."""
        if self._frame is None:
            data = msgspec.json.encode(self.event)
            self._frame = frame(self.event.type, data, self.event.revision)
        return self._frame


Entry = Item | Reset | Failure


#: A parked stream's own delivery: True when it took every entry itself.
Direct = Callable[[list[Entry]], bool]


class Subscription:
    """One stream's place in a feed: an inbox and a wake-up.

    While its stream is parked with nothing queued, ``direct`` may hold the
    stream's synchronous delivery: the feed then hands it the entries and
    the stream's task is not woken at all (see :mod:`api.sse`). Whatever it
    declines goes to the inbox, and the task takes over.
    """

    __slots__ = ("__weakref__", "direct", "inbox", "overflowed", "wake")

    def __init__(self) -> None:
        self.inbox: deque[Entry] = deque()
        self.wake = asyncio.Event()
        self.overflowed = False
        self.direct: Direct | None = None

    def push(self, entries: list[Entry]) -> None:
        """Deliver or queue ``entries``; past :data:`INBOX_LIMIT` drop them (the stream reads)."""
        direct = self.direct
        if direct is not None:
            self.direct = None  # a delivery that may go on re-arms itself
            try:
                if not self.inbox and not self.overflowed and direct(entries):
                    return
            except Exception:  # never the feed's problem: the stream's task takes over
                log.exception("direct delivery failed; the stream's task takes over")
        if len(self.inbox) + len(entries) > INBOX_LIMIT:
            self.inbox.clear()
            self.overflowed = True
        else:
            self.inbox.extend(entries)
        self.wake.set()


class TenantFeed:
    """One tenant's log follower shared by every stream of the tenant on this worker."""

    def __init__(self, fanout: FanOut, tenant: str) -> None:
        self.fanout = fanout
        self.tenant = tenant
        self.keys = tenant_keys(tenant)
        self.subs: set[Subscription] = set()
        #: Streams that stopped waiting for the feed to prime: they catch up
        #: from the log once it has (records before its first revision are
        #: never handed out).
        self.unprimed: set[Subscription] = set()
        #: Revision up to which every record was handed out (None: not primed).
        self.last: int | None = None
        self.epoch: str | None = None
        self.primed = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hub: SharedHub | None = None
        self._closing = False

    # -- the hub's Listener protocol: every signal is a wake-up --------------
    def on_event(self, event: ChangeEvent) -> None:
        """A change message arrived: read the log."""
        self._wake.set()

    def on_keyspace(self, namespace: str, op: str) -> None:
        """Not subscribed to keyspace events."""

    def on_subscribed(self) -> None:
        """(Re)subscribed: messages may have been lost, read the log."""
        self._wake.set()

    def on_disconnected(self, exc: BaseException) -> None:
        """The hub reconnects; the revision check keeps the feed going meanwhile."""
        self._wake.set()

    async def start(self) -> None:
        """Subscribe through the shared hub (when the store's server is reachable) and run."""
        url = self.fanout.hub_url
        if self.fanout.use_hub:
            try:
                self._hub = registry.acquire(url, timeout=2.0, ping_interval=1.0)
                await self._hub.add(self, self.keys.changes_channel, {})
            except (RedisError, OSError, KvconfError) as exc:
                log.info("watch feed of %s falls back to polling: %s", self.tenant, exc)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"kvconf-feed-{self.tenant}"
        )

    async def aclose(self) -> None:
        """Stop following (the last stream left)."""
        self._closing = True
        if self._task is not None:
            # redis-py may swallow a cancellation inside a command: stop_task
            # cancels until the task ends, and the loop checks _closing too.
            await stop_task(self._task)
        if self._hub is not None:
            with contextlib.suppress(RedisError, OSError, KvconfError):
                await self._hub.remove(self, self.keys.changes_channel, {})
            await registry.release(self._hub)
            self._hub = None

    async def _broadcast(self, entries: list[Entry]) -> None:
        """Hand ``entries`` to every stream, letting the loop run between slices of streams.

        Most parked streams send at once from here (a socket write each), so
        a large fleet would otherwise hold the loop for the whole fan-out.
        A stream joining meanwhile is not in the slices; it catches up from
        the log, as ``last`` was advanced first.
        """
        subs = list(self.subs)
        for start in range(0, len(subs), _SLICE):
            if start:
                await asyncio.sleep(0)
            for sub in subs[start : start + _SLICE]:
                sub.push(entries)

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self._step()
            except (Unavailable, RedisError, OSError) as exc:
                log.debug("watch feed of %s: %s", self.tenant, exc)
            except KvconfError as exc:
                await self._broadcast([Failure(exc.to_dict())])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.fanout.poll):
                    await self._wake.wait()

    async def _step(self) -> None:
        store = self.fanout.store
        rev, epoch_raw = await store.redis.mget(self.keys.rev, self.keys.epoch)
        current = 0 if rev is None else int(rev)
        epoch = None if epoch_raw is None else as_text(epoch_raw)
        if self.last is None:
            self.last, self.epoch = current, epoch
            self.primed.set()
            for sub in self.unprimed:
                sub.overflowed = True  # read the log up to here, then take the feed's records
                sub.wake.set()
            self.unprimed.clear()
            return
        if current < self.last or (epoch is not None and self.epoch not in (None, epoch)):
            reason = "revision went backwards" if current < self.last else "epoch changed"
            self.last, self.epoch = current, epoch
            await self._broadcast([Reset(current, reason)])
            return
        self.epoch = epoch or self.epoch
        while current > self.last:
            try:
                events = await read_log(store, self.tenant, self.last, limit=_PAGE)
            except HistoryTrimmed as exc:
                self.last = current
                await self._broadcast([Reset(current, exc.message)])
                return
            if not events:
                return
            self.last = events[-1].revision
            await self._broadcast([Item(e) for e in events])
            if len(events) < _PAGE:
                return


class Slot:
    """A reserved stream place: released once, by the stream or when it is dropped unused."""

    __slots__ = ("__weakref__", "_fanout", "released")

    def __init__(self, fanout: FanOut) -> None:
        self._fanout = fanout
        self.released = False

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if not self.released:
            self.released = True
            self._fanout.open_streams -= 1


class FanOut:
    """A worker's tenant feeds and its count of open streams."""

    def __init__(
        self,
        store: Store,
        *,
        hub_url: str | None,
        use_hub: bool,
        max_streams: int,
        poll: float = 1.0,
        retry_after: int = 5,
    ) -> None:
        self.store = store
        self.hub_url = hub_url
        self.use_hub = use_hub
        self.max_streams = max_streams
        self.poll = poll
        self.retry_after = retry_after
        self.open_streams = 0
        #: Seconds a new stream waits for its tenant's feed to prime (one
        #: ``MGET``) before it starts from the log alone.
        self.prime_timeout = 5.0
        #: Records the feeds wrote to parked streams themselves (no task woken).
        self.direct_writes = 0
        self.feeds: dict[str, TenantFeed] = {}
        self._closing: set[asyncio.Task[None]] = set()
        #: Bounds the Redis reads of streams starting at once (a reconnecting
        #: fleet): they wait for a connection of the pool rather than fail.
        self.starting = asyncio.Semaphore(32)

    def revision(self, tenant: str) -> int | None:
        """The revision the tenant's live feed has handed out (None: no primed feed)."""
        feed = self.feeds.get(tenant)
        return feed.last if feed is not None and feed.primed.is_set() else None

    def position(self, tenant: str) -> tuple[int, str] | None:
        """The revision and epoch of the tenant's live feed (None: none primed, or no epoch)."""
        feed = self.feeds.get(tenant)
        if feed is None or not feed.primed.is_set() or feed.last is None or feed.epoch is None:
            return None
        return feed.last, feed.epoch

    def reserve(self) -> Slot:
        """A place for one more stream, or :class:`TooManyStreams` (503) when full."""
        if self.open_streams >= self.max_streams:
            raise TooManyStreams(self.max_streams, self.retry_after)
        self.open_streams += 1
        return Slot(self)

    def guard(self, stream: Any, slot: Slot) -> None:
        """Release ``slot`` when ``stream`` is garbage even if it never ran."""
        weakref.finalize(stream, slot.release)

    async def join(self, tenant: str, sub: Subscription) -> TenantFeed:
        """Register ``sub`` with the tenant's feed (started on first use); primed on return."""
        feed = self.feeds.get(tenant)
        try:
            if feed is None:
                feed = self.feeds[tenant] = TenantFeed(self, tenant)
                feed.subs.add(sub)
                await feed.start()
            else:
                feed.subs.add(sub)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.prime_timeout):
                    await feed.primed.wait()
        except BaseException:  # cancelled while joining: the stream never learns of the feed
            if feed is not None:
                await self.leave(feed, sub)
            raise
        if not feed.primed.is_set():
            feed.unprimed.add(sub)
        return feed

    async def leave(self, feed: TenantFeed, sub: Subscription) -> None:
        """Unregister ``sub``; the last stream of a tenant stops its feed."""
        feed.subs.discard(sub)
        feed.unprimed.discard(sub)
        if not feed.subs and self.feeds.get(feed.tenant) is feed:
            del self.feeds[feed.tenant]
            # In the background: the stream's response ends now, not once the
            # feed's Redis calls have noticed the cancellation.
            task = asyncio.get_running_loop().create_task(feed.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Stop every feed (app shutdown)."""
        for feed in list(self.feeds.values()):
            await feed.aclose()
        self.feeds.clear()
        while self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
