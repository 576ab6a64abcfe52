"""Server-side scripts: loaded once from ``lua/*.lua``, called by SHA.

redis-py's ``register_script`` runs ``EVALSHA`` and falls back to loading the
script on ``NOSCRIPT`` (after a server restart or ``SCRIPT FLUSH``), so each
call is one round trip in the steady state.

:meth:`Scripts.batched` adds automatic pipelining for concurrent callers: the
first call goes out at once; calls made while it is in flight queue up and go
out together as one pipeline of ``EVALSHA`` commands (not a transaction: each
script is still atomic on its own and fails or succeeds alone). An idle caller
pays nothing extra; many concurrent callers share round trips and the
client-side cost of a socket write and read. :meth:`Scripts.batched_command`
does the same for plain commands whose reply needs no parsing (``HGET``).
"""

from __future__ import annotations

import asyncio
import select
from functools import cache
from importlib import resources
from typing import Any

import fakeredis
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .internals import stream_pair, stream_writer
from .resp import pack_command

__all__ = ["Scripts", "pack_command", "script_source"]


@cache
def script_source(name: str, *, shebang: bool = True) -> str:
    """The Lua source of the named script (``write``, ``read_state``, ...).

    Scripts that write start with a ``#!lua`` shebang: Redis 7 then checks
    ``maxmemory`` once, before the script runs, instead of at each write
    command, so a write refused for memory is refused whole. fakeredis does
    not parse shebangs (and has no ``maxmemory``): ``shebang=False`` drops
    that line for it.
    """
    text = resources.files("kvconf._redis").joinpath("lua", f"{name}.lua").read_text("utf-8")
    if not shebang and text.startswith("#!"):
        text = "--" + text[2:]  # keeps line numbers in error messages
    return text


Command = tuple[Any, ...]

#: The smallest pool a runner holds a connection of between calls (redis-py's
#: default is 100); from a smaller or a blocking one it borrows per round trip.
HOLD_MIN_POOL = 16


class _Pipelined:
    """Automatic pipelining of concurrent commands (see module docstring)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # One connection of the client's pool, held while the runner lives:
        # calls go out one round trip at a time, so one is all it needs, and
        # taking it from the pool and back cost more than packing the call.
        # Not from a small or blocking pool: the rest of the store needs it.
        pool = client.connection_pool
        self._hold = not isinstance(pool, BlockingConnectionPool) and (
            pool.max_connections >= HOLD_MIN_POOL
        )
        self._conn: Any = None
        self._closed = False
        self._busy = False
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        # Held so the running drain task is not garbage-collected mid-flight.
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, command: Command) -> Any:
        """``command``'s reply (an error reply raised), sharing round trips with others."""
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._pending.append((command, future))
            return await future
        self._busy = True
        try:
            (reply,) = await self._exchange([command])
            if isinstance(reply, Exception):
                raise reply
            return reply
        finally:
            if self._pending:
                self._drainer = asyncio.get_running_loop().create_task(self._drain())
            else:
                self._busy = False

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    _settle(batch, None)
                    raise
                except Exception as exc:  # every caller hears of it; none waits forever
                    _settle(batch, exc)
        finally:
            self._busy = False
            leftover, self._pending = self._pending, []
            _settle(leftover, None)  # only when cancelled mid-drain

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        results = await self._exchange([command for command, _ in batch])
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _exchange(self, commands: list[Command]) -> list[Any]:
        """Every command's reply in one round trip, errors as values."""
        return await self._roundtrip(commands)

    async def _roundtrip(self, commands: list[Command]) -> list[Any]:
        """``commands`` in one write on the runner's connection; every reply, errors as values.

        What ``pipeline(transaction=False).execute(raise_on_error=False)`` does
        for commands without response callbacks, without its per-command
        bookkeeping (it cost more than the Redis round trip it saves). A
        failure mid-way drops the connection, so no reply is left on the
        wire; the next call connects again.
        """
        if self._closed:
            raise RedisConnectionError("the store is closed")
        pool = self._client.connection_pool
        conn = self._conn
        if conn is None:
            conn = await pool.get_connection()
            if self._hold:
                self._conn = conn
        elif not _open(conn):  # the server closed it (restart, idle timeout)
            await conn.disconnect()
        try:
            await _write_now(conn, b"".join(map(pack_command, commands)))
            results: list[Any] = []
            for _ in commands:
                try:
                    results.append(await conn.read_response())
                except ResponseError as exc:
                    results.append(exc)
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            if not self._hold or self._closed:  # borrowed, or the runner closed meanwhile
                if self._conn is conn:
                    self._conn = None
                await pool.release(conn)
        return results

    async def aclose(self) -> None:
        """Refuse further calls, stop a drain in flight, give the held connection back.

        A call still in flight gives it back itself when it ends.
        """
        self._closed = True
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            drainer.cancel()
            await asyncio.wait([drainer], timeout=1.0)
        if not self._busy:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._client.connection_pool.release(conn)


class _PipelinedScript(_Pipelined):
    """Pipelined ``EVALSHA`` calls of one script, reloading it on NOSCRIPT."""

    def __init__(self, client: Any, script: Any) -> None:
        super().__init__(client)
        self._script = script

    async def _exchange(self, commands: list[Command]) -> list[Any]:
        """Every call's reply in one round trip, errors as values.

        Calls answered NOSCRIPT (the server lost its scripts: a restart,
        SCRIPT FLUSH) are sent again once after loading the script; if it
        cannot be loaded, they get that error.
        """
        results = await self._roundtrip(commands)
        lost = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
        if lost:
            try:
                # SCRIPT LOAD first, in the same round trip as the calls again
                load, *again = await self._roundtrip(
                    [("SCRIPT", "LOAD", self._script.script), *(commands[i] for i in lost)]
                )
                if isinstance(load, Exception):
                    again = [load] * len(lost)
            except Exception as exc:
                again = [exc] * len(lost)
            for i, result in zip(lost, again, strict=True):
                results[i] = result
        return results


def _open(conn: Any) -> bool:
    """True if ``conn`` is connected and nothing waits to be read on it.

    What the pool checks before it lends a connection, in one ``poll``: a
    server that closed the connection (a restart, an idle timeout) left an
    EOF there, whether or not the event loop has seen it yet.
    """
    pair = stream_pair(conn) if conn.is_connected else None
    if pair is None:
        return False
    reader, writer = pair
    if reader.at_eof() or reader.exception() is not None:
        return False
    sock = writer.get_extra_info("socket") if isinstance(writer, asyncio.StreamWriter) else None
    if sock is None:
        return True
    if not hasattr(select, "poll"):  # Windows: select() takes any socket there
        return not select.select([sock], [], [], 0)[0]
    poller = select.poll()  # not select(): it fails on descriptors past 1023
    poller.register(sock.fileno(), select.POLLIN)
    return not poller.poll(0)


async def _write_now(conn: Any, data: bytes) -> None:
    """Write ``data`` on redis-py connection ``conn`` now.

    ``send_packed_command`` with a socket timeout (redis-py's default is 5 s)
    runs the write in a new task under ``wait_for``: the bytes leave one loop
    step later. Here they leave at once; only a full socket buffer is waited
    for, within the timeout.
    """
    writer = stream_writer(conn) if conn.is_connected else None
    if writer is None:  # not connected yet: connect, then send
        await conn.send_packed_command(data, check_health=False)
        return
    writer.write(data)
    if writer.transport.get_write_buffer_size():
        try:
            async with asyncio.timeout(conn.socket_timeout):
                await writer.drain()
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None


def _settle(batch: list[tuple[Command, asyncio.Future[Any]]], exc: BaseException | None) -> None:
    """Fail (``exc``) or cancel (None) every future of ``batch`` not yet done."""
    for _, future in batch:
        if not future.done():
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)


class Scripts:
    """The scripts bound to one Redis client, registered lazily by name.

    ``pipelining=False`` (for Cluster clients, whose pipelines route per
    slot, and in-process clients, which must see every command through
    ``execute_command``) makes :meth:`batched` a plain call.
    """

    def __init__(self, client: Any, *, pipelining: bool = True) -> None:
        self._client = client
        self._bound: dict[str, Any] = {}
        self._pipelined: dict[str, _PipelinedScript] = {}
        self._commands: _Pipelined | None = None
        self._pipelining = pipelining
        self._in_process = isinstance(client, fakeredis.FakeAsyncRedis)

    def _script(self, name: str) -> Any:
        script = self._bound.get(name)
        if script is None:
            source = script_source(name, shebang=not self._in_process)
            script = self._bound[name] = self._client.register_script(source)
        return script

    async def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args``; one round trip."""
        return await self._script(name)(keys=keys, args=args)

    async def batched(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Like calling, but concurrent calls share pipelined round trips."""
        if not self._pipelining:
            return await self(name, keys, args)
        script = self._script(name)
        runner = self._pipelined.get(name)
        if runner is None:
            runner = self._pipelined[name] = _PipelinedScript(self._client, script)
        return await runner(("EVALSHA", script.sha, len(keys), *keys, *args))

    async def batched_command(self, *args: str | bytes | int | float) -> Any:
        """A plain command's raw reply; concurrent calls share pipelined round trips.

        For commands whose reply redis-py passes through unparsed (HGET,
        GET, ...); an error reply is raised as redis-py raises it.
        """
        if not self._pipelining:
            return await self._client.execute_command(*args)
        if self._commands is None:
            self._commands = _Pipelined(self._client)
        return await self._commands(args)

    async def aclose(self) -> None:
        """Give the connections the batched runners hold back to the client's pool."""
        for runner in [*self._pipelined.values(), self._commands]:
            if runner is not None:
                await runner.aclose()
