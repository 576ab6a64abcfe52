"""The hub's pub/sub connection: replies handed over as the bytes arrive.

On a server reached over a socket, redis-py opens and authenticates the
connection (URL options, TLS, AUTH, HELLO, client name); then the session
takes the socket's transport over: an asyncio protocol feeds a hiredis
reader and hands each complete reply to the hub from the transport's own
callback. A change event is applied in the loop step that received it. No
task has to wake up for it, and the reply to a write made in the same
process, when it arrives in the same step, no longer runs first.

The embedded (fakeredis) server has no socket; there, and if the transport
cannot be taken over, the session reads through redis-py's ``PubSub``.
Either way the hub sees the same raw replies: ``[kind, ...]`` lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from .internals import detach_streams, stream_pair, stream_writer
from .resp import pack_command

try:
    import hiredis

    HIREDIS = True
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    HIREDIS = False

__all__ = ["Session", "open_session"]

log = logging.getLogger("kvconf.watcher")

OnReply = Callable[[Any], None]


class Session:
    """One pub/sub connection: send commands, hand replies to ``on_reply``.

    Error replies are handed over as exceptions; ``on_reply`` raising a
    ``RedisError`` ends the connection.
    """

    async def open(self) -> None:
        """Connect and authenticate."""

    async def send(self, *args: str) -> None:
        """Send one command (SSUBSCRIBE, PSUBSCRIBE, their UN-, PING)."""
        raise NotImplementedError

    async def run(self) -> None:
        """Deliver replies until the connection fails; raise that failure."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection."""

    @property
    def sockname(self) -> tuple[str, int] | None:
        """The local address of the connection's socket, if it has one."""
        return None


def open_session(client: Any, on_reply: OnReply, *, embedded: bool) -> Session:
    """A session on ``client``'s server: read off the socket unless ``embedded``."""
    if HIREDIS and not embedded:
        return _SocketSession(client, on_reply)
    return _PubSubSession(client, on_reply)


class _SocketSession(asyncio.Protocol, Session):
    """Pub/sub read by this protocol straight off redis-py's socket."""

    def __init__(self, client: Any, on_reply: OnReply) -> None:
        self._client = client
        self._on_reply = on_reply
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._writer: asyncio.StreamWriter | None = None  # held: collecting it closes the socket
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fallback: _PubSubSession | None = None

    async def open(self) -> None:
        conn = self._client.connection_pool.make_connection()
        await conn.connect()  # the handshake: AUTH, HELLO, SELECT, CLIENT SETNAME
        streams = _take_streams(conn)
        if streams is None:  # a redis-py without the stream attributes read here
            log.debug("cannot read the pub/sub socket directly; reading through redis-py")
            await conn.disconnect()
            self._fallback = _PubSubSession(self._client, self._on_reply)
            return
        self._writer, transport = streams
        transport.set_protocol(self)
        self._transport = transport

    async def send(self, *args: str) -> None:
        if self._fallback is not None:
            await self._fallback.send(*args)
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionError("the pub/sub connection is closed")
        transport.write(pack_command(args))

    async def run(self) -> None:
        if self._fallback is not None:
            await self._fallback.run()
            return
        await self._done

    async def close(self) -> None:
        if self._fallback is not None:
            await self._fallback.close()
        if self._transport is not None:
            self._transport.close()
        if not self._done.done():
            self._done.cancel()
        elif not self._done.cancelled():
            self._done.exception()  # retrieved: run() may have been cancelled before it saw it

    @property
    def sockname(self) -> tuple[str, int] | None:
        if self._fallback is not None:
            return self._fallback.sockname
        return None if self._transport is None else _address(self._transport)

    # -- asyncio.Protocol ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._done.done():  # closed or failed: a TLS close may still deliver data
            return
        reader = self._reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self._on_reply(reply)  # an error reply too: the hub says if it ends the connection
        except RedisError as exc:
            self._fail(exc)
        except Exception as exc:  # a fault of ours: reconnect, and the listeners catch up
            log.exception("pub/sub reply could not be handled; reconnecting")
            self._fail(ConnectionError(f"pub/sub reply could not be handled: {exc!r}"))

    def eof_received(self) -> bool:
        self._fail(ConnectionError("the server closed the pub/sub connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"the pub/sub connection was lost: {exc or 'closed'}"))

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        if self._transport is not None:
            self._transport.abort()


def _take_streams(conn: Any) -> tuple[asyncio.StreamWriter, asyncio.Transport] | None:
    """The stream writer and transport of redis-py connection ``conn``, detached from it.

    redis-py keeps it in ``_reader``/``_writer``; after the handshake nothing
    is left unread on it. The connection object forgets the pair, so it
    neither closes the socket nor warns when it is collected; the caller
    must hold on to the writer (collecting it closes the transport).
    """
    pair = stream_pair(conn)
    if pair is None:
        return None
    writer = pair[1]
    transport = writer.transport
    if not isinstance(transport, asyncio.Transport):
        return None
    detach_streams(conn)
    return writer, transport


class _PubSubSession(Session):
    """Pub/sub through redis-py's ``PubSub`` (the embedded server; a fallback)."""

    def __init__(self, client: Any, on_reply: OnReply) -> None:
        self._pubsub = client.pubsub()
        self._on_reply = on_reply

    async def send(self, *args: str) -> None:
        await self._pubsub.execute_command(*args)

    async def run(self) -> None:
        conn = self._pubsub.connection
        if conn is None:  # nothing subscribed (the last listener is leaving)
            raise ConnectionError("no subscriptions on the pub/sub connection")
        while True:
            # What PubSub.get_message(timeout=None) reads, without its retry
            # wrapper (the hub reconnects itself). math.inf: block, no timeout.
            try:
                reply = await conn.read_response(
                    timeout=math.inf, disconnect_on_error=False, push_request=True
                )
            except ResponseError as exc:  # an error reply: the hub decides, as above
                reply = exc
            if reply is None:  # a blocking read that returns nothing: the socket is gone
                raise ConnectionError("the pub/sub connection returned no reply")
            self._on_reply(reply)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._pubsub.aclose()

    @property
    def sockname(self) -> tuple[str, int] | None:
        conn = self._pubsub.connection
        writer = stream_writer(conn)
        return None if writer is None else _address(writer)


def _address(stream: asyncio.BaseTransport | asyncio.StreamWriter) -> tuple[str, int] | None:
    """The local (host, port) of a transport or stream writer; None on a unix socket."""
    name = stream.get_extra_info("sockname")
    return (name[0], name[1]) if isinstance(name, tuple) else None
