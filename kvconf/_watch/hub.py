"""The shared subscriber: one pub/sub connection per event loop and Redis server.

Every :class:`~kvconf.Watcher` of a process that watches the same server (the
same URL) registers here; the hub holds one ``SSUBSCRIBE``/``PSUBSCRIBE``
connection for all of them and dispatches each message to the listeners of
its channel, decoding a change event once however many listeners it has.

Pub/sub is at-most-once, so the hub never hides a disconnect: listeners hear
``on_disconnected`` when the connection fails and ``on_subscribed`` on every
subscribe confirmation (first or after a reconnect), their cue to catch up.
The hub reconnects with capped exponential backoff and jitter (reset once a
connection has been up a while, see :mod:`.backoff`), and pings an idle
connection so a half-open socket is noticed too.

Watchers get their hub from :mod:`kvconf._watch.registry`, which returns a
:class:`~kvconf._watch.cluster.ClusterHub` on Redis Cluster (routing each
listener to one ``Hub`` per primary node); this module knows nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, RedisError
from redis.retry import Retry

from .._codec import as_text, decode_event
from .._redis.connect import connect
from .._redis.pubsub import Session, open_session
from .._tasks import stop_task
from ..config import safe_url
from ..exceptions import Unavailable
from ..models import ChangeEvent
from .backoff import Backoff

__all__ = [
    "Hub",
    "Listener",
    "SharedHub",
    "client_for",
    "is_embedded",
]

log = logging.getLogger("kvconf.watcher")


def is_embedded(url: str | None) -> bool:
    """True for the in-process fakeredis default (``None`` or ``memory://``)."""
    return url is None or url.startswith("memory://")


def client_for(url: str | None, timeout: float, *, pubsub: bool = False) -> Any:
    """A Redis client for the watcher: short timeouts, no silent retries."""
    if url is None or is_embedded(url):
        return connect(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0 if pubsub else 1),
    }
    if not url.startswith("unix://"):  # redis-py's unix socket connections refuse it
        options["socket_keepalive"] = True
    # Pub/sub reads pass their own timeout; this bounds the handshake and sends.
    # Commands get long enough for a full state read of a big tenant; checks
    # use their own, shorter timeout.
    options["socket_timeout"] = timeout if pubsub else max(10.0, timeout)
    return connect(url, **options)


class Listener(Protocol):
    """What a watcher's engine gives the hub (the hooks are never public on ``Watcher``)."""

    def on_event(self, event: ChangeEvent) -> None:
        """A change event arrived on the listener's channel."""

    def on_keyspace(self, namespace: str, op: str) -> None:
        """A keyspace notification for one of the listener's namespace hashes."""

    def on_subscribed(self) -> None:
        """The channel is (re)subscribed: events may have been lost before it."""

    def on_disconnected(self, exc: BaseException) -> None:
        """The pub/sub connection failed; the hub is reconnecting."""


class SharedHub(Protocol):
    """What a watcher holds: a :class:`Hub`, or a ``ClusterHub`` on Redis Cluster."""

    refs: int

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` has begun."""

    @property
    def connected(self) -> bool:
        """True while every subscription is confirmed on an open connection."""

    async def add(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Subscribe ``listener`` to ``channel`` and keyspace ``patterns``."""

    async def remove(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Unsubscribe ``listener``."""

    async def aclose(self) -> None:
        """Close every connection."""


class Hub:
    """One pub/sub connection shared by every listener on one server.

    ``on_lost`` (the cluster hub's hook) hears ``on_lost(channel)`` when the
    server unsubscribed a channel that still has listeners (its slot moved
    to another node) and ``on_lost(None)`` when the connection failed.
    """

    def __init__(
        self,
        url: str | None,
        *,
        timeout: float = 2.0,
        ping_interval: float = 1.0,
        on_lost: Callable[[str | None], None] | None = None,
    ):
        self.url = url
        self.on_lost = on_lost
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.refs = 0
        self.connected = False
        self._client = client_for(url, timeout, pubsub=True)
        self._session: Session | None = None
        self._channels: dict[str, set[Listener]] = {}
        self._patterns: dict[str, dict[Listener, str]] = {}
        self._confirmed: set[str] = set()
        self._dropped: set[str] = set()  # unsubscribed by the server, listeners kept
        self._unsubscribing: dict[str, int] = {}  # SUNSUBSCRIBEs sent, not yet confirmed
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._send_lock = asyncio.Lock()
        self._last_rx = 0.0
        self._ping_sent: float | None = None
        self._backoff = Backoff()

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` has begun."""
        return self._closing

    @property
    def pubsub_client(self) -> Any:
        """The Redis client the hub subscribes with (for tests and benchmarks)."""
        return self._client

    @property
    def sockname(self) -> tuple[str, int] | None:
        """The local address of the pub/sub connection, while it is open."""
        return None if self._session is None else self._session.sockname

    def is_dropped(self, channel: str) -> bool:
        """True if the server unsubscribed ``channel`` while it still had listeners."""
        return channel in self._dropped

    async def add(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Subscribe ``listener`` to ``channel`` and keyspace ``patterns`` (pattern → prefix)."""
        new_channel = channel not in self._channels or channel in self._dropped
        self._channels.setdefault(channel, set()).add(listener)
        new_patterns = [p for p in patterns if p not in self._patterns]
        for pattern, prefix in patterns.items():
            self._patterns.setdefault(pattern, {})[listener] = prefix
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kvconf-hub")
            return
        if not new_channel and channel in self._confirmed:
            listener.on_subscribed()
        if new_channel or new_patterns:
            try:
                async with asyncio.timeout(self.timeout), self._send_lock:
                    session = self._session
                    if session is None:
                        return  # the reader subscribes everything when it reconnects
                    if new_patterns:
                        await session.send("PSUBSCRIBE", *new_patterns)
                    if new_channel:
                        self._dropped.discard(channel)
                        await session.send("SSUBSCRIBE", channel)
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("subscribe failed, the reader reconnects: %s", exc)

    async def remove(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Unsubscribe ``listener``; drop the server subscriptions nobody needs any more."""
        members = self._channels.get(channel)
        gone_channel = False
        if members is not None:
            members.discard(listener)
            if not members:
                del self._channels[channel]
                self._confirmed.discard(channel)
                # the server already dropped it: SUNSUBSCRIBE would be redirected
                gone_channel = channel not in self._dropped
                self._dropped.discard(channel)
        gone_patterns = []
        for pattern in patterns:
            owners = self._patterns.get(pattern)
            if owners is not None:
                owners.pop(listener, None)
                if not owners:
                    del self._patterns[pattern]
                    gone_patterns.append(pattern)
        if gone_channel or gone_patterns:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout), self._send_lock:
                    session = self._session
                    if session is None:
                        return
                    if gone_channel:
                        self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
                        await session.send("SUNSUBSCRIBE", channel)
                    if gone_patterns:
                        await session.send("PUNSUBSCRIBE", *gone_patterns)

    async def aclose(self) -> None:
        """Stop the reader and close the connection."""
        self._closing = True
        if self._task is not None:
            await stop_task(self._task)
        await self._client.aclose()

    def _listeners(self) -> set[Listener]:
        found: set[Listener] = set()
        for members in self._channels.values():
            found.update(members)
        return found

    async def _run(self) -> None:
        while not self._closing:
            session = open_session(self._client, self._on_reply, embedded=is_embedded(self.url))
            try:
                await session.open()
                async with self._send_lock:
                    self._session = session
                    self._dropped.clear()
                    self._unsubscribing.clear()
                    if self._patterns:
                        await session.send("PSUBSCRIBE", *self._patterns)
                    for channel in self._channels:  # one each: a Cluster node refuses
                        await session.send("SSUBSCRIBE", channel)  # channels of two slots
                await self._read(session)
            except (RedisError, OSError, TimeoutError) as exc:
                self._session = None
                self._confirmed.clear()
                if self.connected or self._backoff.attempt == 0:
                    log.warning(
                        "pub/sub connection to %s lost: %s", safe_url(self.url or "embedded"), exc
                    )
                self.connected = False
                for listener in self._listeners():
                    listener.on_disconnected(exc)
                if self.on_lost is not None:
                    self.on_lost(None)
                await asyncio.sleep(self._backoff.down())
            finally:
                self._session = None
                await session.close()

    async def _read(self, session: Session) -> None:
        """Deliver replies until the connection fails; a keepalive task pings it."""
        self._last_rx, self._ping_sent = time.monotonic(), None
        tasks = [
            asyncio.ensure_future(session.run()),
            asyncio.ensure_future(self._keepalive(session)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # the failure that ended the connection
        finally:
            cancelled = False
            for _ in range(50):  # redis-py may swallow a cancellation mid-read
                pending = [t for t in tasks if not t.done()]
                if not pending:
                    break
                for task in pending:
                    task.cancel()
                try:
                    await asyncio.wait(pending, timeout=0.1)
                except asyncio.CancelledError:
                    cancelled = True  # aclose cancels again: finish the cleanup first
            for task in tasks:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved; the first failure was raised above
            if cancelled:
                raise asyncio.CancelledError

    async def _keepalive(self, session: Session) -> None:
        """PING an idle connection; no answer within ``timeout`` ends it."""
        while not self._closing:
            await asyncio.sleep(self.ping_interval / 4)
            now = time.monotonic()
            if self._ping_sent is not None:
                if now - self._ping_sent > self.timeout:
                    raise TimeoutError("no answer to PING on the pub/sub connection")
            elif now - self._last_rx >= self.ping_interval:
                async with asyncio.timeout(self.timeout), self._send_lock:
                    # before sending: the answer may beat the send's return
                    self._ping_sent = time.monotonic()
                    await session.send("PING")

    def _on_reply(self, reply: Any) -> None:
        """One reply on the pub/sub connection: a message, a confirmation, a PONG, an error."""
        self._last_rx, self._ping_sent = time.monotonic(), None
        if isinstance(reply, Exception):
            self._on_error(reply)
            return
        if not isinstance(reply, list) or not reply:
            return  # a PONG outside subscribed mode
        kind = reply[0]
        if kind == b"smessage" or kind == "smessage":
            members = self._channels.get(as_text(reply[1]))
            if not members:
                return
            try:
                event = decode_event(reply[2])
            except Unavailable as exc:  # undecodable: corrupt or foreign
                log.warning("undecodable change event, catching up from the log: %s", exc)
                for listener in list(members):
                    listener.on_subscribed()
                return
            for listener in list(members):
                listener.on_event(event)
            return
        kind = as_text(kind)
        if kind == "pmessage":
            owners = self._patterns.get(as_text(reply[1]))
            if not owners:
                return
            channel, op = as_text(reply[2]), as_text(reply[3])
            for listener, prefix in list(owners.items()):
                if channel.startswith(prefix):
                    listener.on_keyspace(channel[len(prefix) :], op)
        elif kind == "ssubscribe":
            channel = as_text(reply[1])
            self._confirmed.add(channel)
            self.connected = True
            self._backoff.up()  # healthy from here: a failure after a while starts afresh
            for listener in list(self._channels.get(channel, ())):
                listener.on_subscribed()
        elif kind == "sunsubscribe":
            channel = as_text(reply[1])
            expected = self._unsubscribing.get(channel, 0)
            if expected:
                if expected > 1:
                    self._unsubscribing[channel] = expected - 1
                else:
                    del self._unsubscribing[channel]
            elif channel in self._channels:
                self._drop(channel)  # on a Cluster: the channel's slot moved

    def _on_error(self, error: Exception) -> None:
        """An error reply. MOVED/ASK answers an SSUBSCRIBE of a channel whose slot
        another node serves (on a Cluster): that channel is dropped, as if the
        node had unsubscribed it, and the others stay; answering a SUNSUBSCRIBE
        it is moot. Anything else ends the connection."""
        slot = _moved_slot(error)
        lost = [] if slot is None else [c for c in self._channels if _slot(c) == slot]
        # A SUNSUBSCRIBE the node answers MOVED is moot: it no longer serves the slot.
        moot = [] if slot is None else [c for c in self._unsubscribing if _slot(c) == slot]
        for channel in moot:
            del self._unsubscribing[channel]
        if not lost and not moot:
            raise RedisError(f"the server refused a pub/sub command: {error}")
        for channel in lost:
            self._drop(channel)

    def _drop(self, channel: str) -> None:
        """The server no longer delivers ``channel``; its listeners stay (see ``on_lost``)."""
        self._confirmed.discard(channel)
        if channel not in self._dropped:
            self._dropped.add(channel)
            if self.on_lost is not None:
                self.on_lost(channel)


def _moved_slot(error: Exception) -> int | None:
    """The slot of a MOVED or ASK error reply (redis-py's or hiredis's), else None."""
    if isinstance(error, MovedError | AskError):
        return int(error.slot_id)
    words = str(error).split()
    if len(words) >= 2 and words[0] in ("MOVED", "ASK") and words[1].isdigit():
        return int(words[1])
    return None


def _slot(channel: str) -> int:
    return int(key_slot(channel.encode()))
