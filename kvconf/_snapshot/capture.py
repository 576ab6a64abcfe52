"""Reading tenants out of Redis, and the dedicated connections snapshots use.

Save reads each tenant with one MULTI/EXEC. On a standalone server (real or
fakeredis) :func:`capture_stream` does it over dedicated RESP2 connections
with the commands pre-encoded and several tenants in flight, so Redis
serves the next tenants while Python turns the last reply into a
:class:`TenantDump`; on a cluster it falls back to :func:`capture`, one
redis-py transaction pipeline per tenant. Writing back is
:mod:`kvconf._snapshot.restore`.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio.connection import ConnectionPool
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._codec import as_text
from .._redis.internals import connection_options
from .._redis.names import PREFIX, TenantKeys
from .._redis.resp import command
from .._redis.scripts import Scripts
from .format import TenantDump, iter_flat_pairs


def script_keys(tk: TenantKeys) -> list[str]:
    """KEYS of the snapshot_read and restore scripts."""
    return [tk.rev, tk.epoch, tk.meta, tk.namespaces, tk.schema, tk.log]


async def revisions(client: Any, tenants: Sequence[str]) -> dict[str, int]:
    """Current revisions of ``tenants`` (0 if none), one pipelined round trip."""
    if not tenants:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for t in tenants:
            pipe.get(TenantKeys(t).rev)
        raw = await pipe.execute()
    return {t: int(r or 0) for t, r in zip(tenants, raw, strict=True)}


async def scan_suffixes(
    client: Any, tenants: Iterable[str] | None, *, kind: str = ""
) -> dict[str, list[bytes]]:
    """Keys of the given tenants (None: all) named ``kvconf:{t}:<kind>...``.

    Returns the suffixes after ``kvconf:{t}:<kind>``; one SCAN over the keyspace, whatever
    the number of tenants. Only used to find soft-deleted tenants (``kind="meta"``):
    a tenant's own keys are all named from its namespace set.
    """
    wanted = None if tenants is None else {t.encode() for t in tenants}
    found: dict[bytes, list[bytes]] = {}
    head = len(PREFIX) + 2
    skip = len(kind) + 2
    async for raw in client.scan_iter(match=f"{PREFIX}:{{*}}:{kind}*", count=5000):
        key = raw if isinstance(raw, bytes) else raw.encode()
        end = key.find(b"}:", head)
        if end < 0:
            continue
        tenant = key[head:end]
        if wanted is not None and tenant not in wanted:
            continue
        found.setdefault(tenant, []).append(key[end + skip :])
    return {t.decode(): v for t, v in found.items()}


#: Connections a save reads over at once: Redis writes at most 64 KB to one
#: client per event-loop turn, so two streams of big replies go faster than one.
_STREAMS = 2


@asynccontextmanager
async def dedicated_connections(client: Any, n: int) -> AsyncIterator[list[Any]]:
    """``n`` new RESP2 connections to ``client``'s server, closed on exit; [] on a cluster.

    RESP2, so hashes arrive as flat lists (as snapshots store them) rather
    than dicts; connections of their own, so pre-encoded commands and their
    replies are never interleaved with anyone else's.
    """
    pool = getattr(client, "connection_pool", None)
    conns: list[Any] = []
    try:
        base = connection_options(client)
        if isinstance(pool, ConnectionPool) and base is not None:
            options = {**base, "protocol": 2, "decode_responses": False}
            options["socket_read_size"] = 1 << 20
            for _ in range(n):
                conns.append(pool.connection_class(**options))
                await conns[-1].connect()
        yield conns
    finally:
        for conn in conns:
            await conn.disconnect()


def checked_reply(reply: Any) -> Any:
    """``reply`` unless it is (or, for a transaction, holds) an error reply."""
    if isinstance(reply, Exception):
        raise reply
    if isinstance(reply, list):
        for item in reply:
            if isinstance(item, Exception):
                raise item
    return reply


async def read_replies(conn: Any, n: int, *, errors: bool = True) -> list[Any]:
    """The next ``n`` replies on ``conn``; every one is read, then the first error
    reply is raised (``errors=False``: returned in its place)."""
    out: list[Any] = []
    error: ResponseError | None = None
    # one deadline for all n (a timer per reply costs more than parsing most of them)
    try:
        async with asyncio.timeout(conn.socket_timeout):
            for _ in range(n):
                try:
                    out.append(await conn.read_response(disable_decoding=True, timeout=math.inf))
                except ResponseError as exc:
                    error = error or exc
                    out.append(exc)
    except TimeoutError:
        await conn.disconnect()  # replies may still be on their way: never reuse it
        raise RedisTimeoutError(f"no reply within {conn.socket_timeout} s") from None
    if error is not None and errors:
        raise error
    return out


def _capture_request(tk: TenantKeys, names: Sequence[str]) -> tuple[bytes, int]:
    """MULTI, the reads of :func:`capture`, EXEC; and how many replies that makes."""
    cmds = [
        command("MULTI"),
        command("GET", tk.rev),
        command("GET", tk.epoch),
        command("HGETALL", tk.meta),
        command("SMEMBERS", tk.namespaces),
        command("HGETALL", tk.schema),
        command("ZRANGE", tk.log, 0, -1, "WITHSCORES"),
    ]
    for ns in names:
        cmds.append(command("HGETALL", tk.ns(ns)))
        cmds.append(command("HGETALL", tk.trash(ns)))
        cmds.append(command("ZRANGE", tk.hist(ns), 0, -1))
    cmds.append(command("EXEC"))
    return b"".join(cmds), len(cmds)


def _dump_from_reply(tenant: str, names: Sequence[str], reply: list[Any]) -> TenantDump | None:
    """The dump of a RESP2 EXEC reply of :func:`_capture_request` (and of :func:`capture`)."""
    rev, epoch, meta, now_names, schemas, log = reply[:6]
    if rev is None and not meta:  # neither key exists
        return None
    values: dict[str, list[bytes]] = {}
    trash: dict[str, list[bytes]] = {}
    history: dict[str, list[bytes]] = {}
    for i, ns in enumerate(names):
        at = 6 + 3 * i
        if reply[at]:
            values[ns] = reply[at]
        if reply[at + 1]:
            trash[ns] = reply[at + 1]
        if reply[at + 2]:
            history[ns] = reply[at + 2]
    flat_log: list[int | bytes] = []
    for member, score in iter_flat_pairs(log):
        flat_log.extend((int(float(score)), member))
    return TenantDump(
        tenant=tenant,
        revision=int(rev) if rev and rev.isdigit() else 0,  # as tonumber() in the script
        epoch=as_text(epoch or b""),
        meta={as_text(k): as_text(v) for k, v in iter_flat_pairs(meta)},
        namespaces=sorted(as_text(n) for n in now_names),
        schemas={as_text(k): v for k, v in iter_flat_pairs(schemas)},
        values=values,
        trash=trash,
        history=history,
        log=flat_log,
    )


async def capture_stream(
    client: Any, tenants: Sequence[str], *, window: int = 4
) -> AsyncGenerator[TenantDump | None]:
    """Each of ``tenants`` at one revision, in order (None for a tenant with no state).

    Same result as :func:`capture` per tenant. On a standalone server one
    dedicated connection carries up to ``window`` tenants' transactions at
    once: the namespace sets first (one round trip for all tenants), then
    one pre-encoded MULTI/EXEC per tenant; a tenant whose namespace set grew
    in between is read again by the ``snapshot_read`` script.
    """
    if not tenants:
        return
    async with dedicated_connections(client, min(_STREAMS, len(tenants))) as conns:
        if not conns:
            async for dump in _capture_each(client, tenants, window=4):
                yield dump
            return
        keys = [TenantKeys(t) for t in tenants]
        # a list, not one joined buffer: fakeredis's parser slows down on huge buffers
        await conns[0].send_packed_command([command("SMEMBERS", tk.namespaces) for tk in keys])
        known = [{as_text(n) for n in reply} for reply in await read_replies(conns[0], len(keys))]
        sent: deque[tuple[int, list[str], int]] = deque()

        async def send(i: int) -> None:
            names = sorted(known[i])
            request, n = _capture_request(keys[i], names)
            await conns[i % len(conns)].send_packed_command(request, check_health=False)
            sent.append((i, names, n))

        for i in range(min(window, len(tenants))):
            await send(i)
        while sent:
            i, names, n = sent.popleft()
            replies = await read_replies(conns[i % len(conns)], n)
            if i + window < len(tenants):
                await send(i + window)  # Redis reads the next tenants while this one is built
            reply = checked_reply(replies[-1])
            if not {as_text(x) for x in reply[3]} <= known[i]:
                yield await capture_by_script(Scripts(client), tenants[i])
            else:
                yield _dump_from_reply(tenants[i], names, reply)


async def _capture_each(
    client: Any, tenants: Sequence[str], *, window: int
) -> AsyncGenerator[TenantDump | None]:
    """:func:`capture` of each tenant, ``window`` at once, yielded in order."""
    pending: deque[asyncio.Task[TenantDump | None]] = deque()
    try:
        for i, tenant in enumerate(tenants):
            pending.append(asyncio.ensure_future(capture(client, tenant)))
            if i >= window - 1:
                yield await pending.popleft()
        while pending:
            yield await pending.popleft()
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _flat(reply: Any) -> list[Any]:
    """A hash reply as a flat list (field, value, ...), whatever the protocol."""
    if isinstance(reply, dict):
        return [x for pair in reply.items() for x in pair]
    return list(reply)


async def capture(client: Any, tenant: str) -> TenantDump | None:
    """One tenant at one revision (None if it has no state at all).

    Every namespace that ever had a write is in the tenant's namespace set,
    and its history zset holds every version kept of every key, deleted keys
    too, so the tenant is its fixed keys plus, per namespace, one values
    hash, one trash hash and one history zset: no SCAN.

    They are read in one MULTI/EXEC transaction, which Redis runs atomically,
    like a script, but without copying every item into Lua and back (which
    costs about 1 us per item, 4x the plain read). The namespace set is read
    just before; if the transaction finds a namespace that read missed, the
    tenant is read once more by the ``snapshot_read`` script, which reads the
    namespace set and everything it names in one step.
    """
    tk = TenantKeys(tenant)
    known = {as_text(n) for n in await client.smembers(tk.namespaces)}
    names = sorted(known)
    async with client.pipeline(transaction=True) as pipe:
        # plain execute_command: the cluster client's transaction passes the
        # ``keys=`` option of redis-py's command methods to reply callbacks
        # that do not take it (redis-py 8.1)
        pipe.execute_command("EXISTS", tk.meta, tk.rev)
        pipe.execute_command("GET", tk.rev)
        pipe.execute_command("GET", tk.epoch)
        pipe.execute_command("HGETALL", tk.meta)
        pipe.execute_command("SMEMBERS", tk.namespaces)
        pipe.execute_command("HGETALL", tk.schema)
        pipe.execute_command("ZRANGE", tk.log, 0, -1, "WITHSCORES")
        for ns in names:
            pipe.execute_command("HGETALL", tk.ns(ns))
            pipe.execute_command("HGETALL", tk.trash(ns))
            pipe.execute_command("ZRANGE", tk.hist(ns), 0, -1)
        reply = await pipe.execute()
    exists, rev, epoch, meta, now_names, schemas, log = reply[:7]
    if not exists:
        return None
    if not {as_text(n) for n in now_names} <= known:
        return await capture_by_script(Scripts(client), tenant)
    # the RESP2 layout _dump_from_reply reads: hashes flat, scored members flat
    if log and isinstance(log[0], list | tuple):  # RESP3: [member, score] pairs
        log = [x for pair in log for x in pair]
    head = [rev, epoch, _flat(meta), now_names, _flat(schemas), log]
    spaces = reply[7:]
    for i in range(0, len(spaces), 3):
        head += [_flat(spaces[i]), _flat(spaces[i + 1]), list(spaces[i + 2])]
    return _dump_from_reply(tenant, names, head)


async def capture_by_script(scripts: Scripts, tenant: str) -> TenantDump | None:
    """One tenant at one revision, read by the ``snapshot_read`` script in one step.

    Same result as :func:`capture`; slower for big tenants (every item passes
    through Lua), but needs no earlier read of the namespace set.
    """
    tk = TenantKeys(tenant)
    reply = await scripts("snapshot_read", script_keys(tk), [f"{tk.base}:"])
    if reply[0] != 1:
        return None
    _, rev, epoch, meta, names, schemas, values, trash, history, log = reply
    return TenantDump(
        tenant=tenant,
        revision=int(rev),
        epoch=as_text(epoch),
        meta={as_text(k): as_text(v) for k, v in iter_flat_pairs(meta)},
        namespaces=sorted(as_text(n) for n in names),
        schemas={as_text(k): v for k, v in iter_flat_pairs(schemas)},
        values={as_text(k): v for k, v in iter_flat_pairs(values)},
        trash={as_text(k): v for k, v in iter_flat_pairs(trash)},
        history={as_text(k): v for k, v in iter_flat_pairs(history)},
        log=log,
    )
