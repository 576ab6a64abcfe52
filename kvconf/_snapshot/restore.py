"""Writing captured tenants back: one MULTI/EXEC per tenant, or the restore script.

:func:`restore_tx` restores a tenant in modes ``replace`` and ``load`` with
native commands in one transaction over a dedicated connection of
:func:`~kvconf._snapshot.capture.dedicated_connections`; :func:`restore_one`
runs ``restore.lua`` (mode ``merge``, and every mode on a cluster) with the
arguments of :func:`restore_args`. :func:`restore_diff` counts what a
restore would change (its dry run); :func:`run_after_restore` runs the
hooks installed with :func:`on_restored` (the embedded store journals what
the transactions wrote).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import _codec
from .._codec import as_text
from .._redis.names import TenantKeys
from .._redis.resp import command
from .._redis.scripts import Scripts
from .._store.ops import foreign_type
from ..exceptions import Conflict, TenantNotFound, Unavailable
from .capture import checked_reply, read_replies, script_keys
from .format import TenantDump, iter_flat_pairs

if TYPE_CHECKING:
    from ..store import Store


def pack(items: Sequence[bytes | str | int]) -> tuple[bytes, str]:
    """Items as one blob for ``restore.lua``, and how they are delimited.

    Stored records are JSON text, which never holds a raw NUL byte, so items
    normally end with NUL (cheapest to split in Lua, mode ``"z"``); if one
    does hold one (foreign data), every item is length-prefixed (``"l"``).
    """
    data = [
        item if type(item) is bytes else b"%d" % item if type(item) is int else str(item).encode()
        for item in items
    ]
    blob = b"\0".join(data) + b"\0"
    if blob.count(b"\0") == len(data):
        return blob, "z"
    return b"".join(b"%d:%s" % (len(d), d) for d in data), "l"


def rename_events(log: list[Any], old: str, new: str) -> list[Any]:
    """The log with each event's tenant renamed (events start with the tenant)."""
    if old == new:
        return log
    head_old, head_new = f'{{"tenant":"{old}",'.encode(), f'{{"tenant":"{new}",'.encode()
    return [
        (head_new + m[len(head_old) :]) if isinstance(m, bytes) and m.startswith(head_old) else m
        for m in log
    ]


def restore_args(
    dump: TenantDump,
    tenant: str,
    *,
    mode: str,
    actor: str,
    reason: str,
    log_limit: int,
) -> list[Any]:
    """ARGV of the restore script for ``dump`` restored as ``tenant``."""
    tk = TenantKeys(tenant)
    args: list[Any] = [
        mode, f"{tk.base}:", tenant, secrets.token_hex(8), dump.revision, _codec.now_iso(),
        _codec.encode(actor), _codec.encode(reason), tk.changes_channel, log_limit, dump.epoch,
    ]  # fmt: skip
    items: list[Any] = []
    items.append(len(dump.meta))
    for k, v in dump.meta.items():
        items.extend((k, v))
    items.append(len(dump.schemas))
    for k, raw in dump.schemas.items():
        items.extend((k, raw))
    items.append(len(dump.namespaces))
    items.extend(dump.namespaces)
    values, trash = dump.values, dump.trash
    if mode != "load" and trash:
        # restoring a soft-deleted capture brings the tenant back with its values
        values, trash = {**trash, **values}, {}
    for section in (values, trash):
        items.append(len(section))
        for name, flat in section.items():
            items.extend((name, len(flat) // 2))
            items.extend(flat)
    items.append(len(dump.history))
    for name, members in dump.history.items():
        items.extend((name, len(members)))
        items.extend(members)
    log = dump.log if mode != "merge" else []
    items.append(len(log) // 2)
    items.extend(rename_events(log, dump.tenant, tenant))
    args.extend(pack(items))
    return args


async def restore_one(
    scripts: Scripts, dump: TenantDump, tenant: str, args: list[Any]
) -> tuple[int, str, int, int]:
    """Run the restore script; returns (new revision, epoch, live revision, changed)."""
    reply = await scripts("restore", script_keys(TenantKeys(tenant)), args)
    if reply[0] == b"ok":
        return int(reply[1]), as_text(reply[2]), int(reply[3]), int(reply[4])
    if reply[0] == b"wrongtype":
        raise Unavailable(
            f"redis key {as_text(reply[1])} has a foreign type", reason="corrupt_state"
        )
    raise TenantNotFound(tenant)


#: Times a restore transaction is retried when a concurrent write to the tenant aborts it.
RESTORE_ATTEMPTS = 5
_CHUNK = 1000


def _command(
    head: Sequence[bytes | str | int], items: Sequence[bytes], *, scored: bool = False
) -> bytes:
    """``head`` followed by ``items`` (each after a ``0`` score with ``scored``), encoded."""
    width = 2 if scored else 1
    out = [b"*%d\r\n" % (len(head) + width * len(items))]
    for arg in head:
        raw = arg if type(arg) is bytes else b"%d" % arg if type(arg) is int else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    if scored:
        out.extend([b"$1\r\n0\r\n$%d\r\n%s\r\n" % (len(m), m) for m in items])
    else:
        out.extend([b"$%d\r\n%s\r\n" % (len(m), m) for m in items])
    return b"".join(out)


def _chunked(head: Sequence[bytes | str | int], items: Sequence[bytes], width: int) -> list[bytes]:
    """``head + items`` as commands of at most ``_CHUNK`` groups of ``width`` items."""
    step = _CHUNK * width
    return [_command(head, items[at : at + step]) for at in range(0, len(items), step)]


def _as_bytes(items: Iterable[bytes | str | int]) -> list[bytes]:
    return [
        i if type(i) is bytes else b"%d" % i if type(i) is int else str(i).encode() for i in items
    ]


def _tx_body(
    dump: TenantDump,
    tk: TenantKeys,
    tenant: str,
    mode: str,
    values: dict[str, list[bytes]],
    trash: dict[str, list[bytes]],
) -> list[bytes]:
    """The transaction's writes of the captured tenant (independent of the live one)."""
    body: list[bytes] = []
    if dump.schemas:
        body += _chunked(("HSET", tk.schema), _as_bytes(_flatten(dump.schemas)), 2)
    if mode == "load" and dump.meta:
        body += _chunked(("HSET", tk.meta), _as_bytes(_flatten(dump.meta)), 2)
    body += _chunked(("SADD", tk.namespaces), _as_bytes(dump.namespaces), 1)
    for ns, flat in trash.items():
        body += _chunked(("HSET", tk.trash(ns)), flat, 2)
    for ns, flat in values.items():
        body += _chunked(("HSET", tk.ns(ns)), flat, 2)
    for ns, members in dump.history.items():
        for at in range(0, len(members), _CHUNK):
            body.append(_command(("ZADD", tk.hist(ns)), members[at : at + _CHUNK], scored=True))
    body += _chunked(("ZADD", tk.log), _as_bytes(rename_events(dump.log, dump.tenant, tenant)), 2)
    return body


def _tx_revision(
    dump: TenantDump,
    tk: TenantKeys,
    tenant: str,
    mode: str,
    live_rev: int,
    gen_raw: bytes | None,
    *,
    actor: str,
    reason: str,
    log_limit: int,
) -> tuple[int, str, list[bytes]]:
    """The restored revision and epoch, and the commands setting them (and the reset event).

    Mode ``load`` keeps the captured ones; otherwise the revision moves past
    both, the epoch is fresh, and a ``reset`` event is logged and published.
    """
    cmds: list[bytes] = []
    rev, epoch = dump.revision, dump.epoch
    if mode != "load":
        rev, epoch = max(live_rev, dump.revision) + 1, secrets.token_hex(8)
        meta = dict(dump.meta)
        meta.pop("deleted_at", None)
        meta.setdefault("created_at", _codec.now_iso())
        live_gen = int(gen_raw) if gen_raw and gen_raw.isdigit() else 0
        file_gen = meta.get("schema_gen", "0")
        meta["schema_gen"] = str(max(live_gen, int(file_gen) if file_gen.isdigit() else 0) + 1)
        cmds += _chunked(("HSET", tk.meta), _as_bytes(_flatten(meta)), 2)
    cmds += [command("SET", tk.rev, rev), command("SET", tk.epoch, epoch)]
    if mode != "load":
        event = _codec.reset_event(tenant, epoch, rev, actor, reason)
        cmds += [
            command("ZADD", tk.log, rev, event),
            command("ZREMRANGEBYRANK", tk.log, 0, -(log_limit + 1)),
            command("SPUBLISH", tk.changes_channel, event),
        ]
    return rev, epoch, cmds


async def restore_tx(
    conn: Any,
    dump: TenantDump,
    tenant: str,
    *,
    mode: str,
    actor: str,
    reason: str,
    log_limit: int,
) -> tuple[int, str, int, int]:
    """Restore ``dump`` as ``tenant`` in one MULTI/EXEC (modes ``replace`` and ``load``).

    The same writes as ``restore.lua`` in those modes, sent as native
    commands: WATCH the tenant's keys, read what the writes depend on (live
    revision, schema generation, namespace set, the types of the keys to
    fill), then one transaction deletes the live tenant and writes the
    captured one. A write to the tenant in between aborts the transaction
    (nothing written) and it is tried again with fresh reads, up to
    :data:`RESTORE_ATTEMPTS` times, then :class:`Conflict`. ``conn`` is a
    RESP2 connection of :func:`dedicated_connections`. Returns (new revision,
    epoch, live revision, 0).
    """
    tk = TenantKeys(tenant)
    values, trash = dump.values, dump.trash
    if mode != "load" and trash:
        # restoring a soft-deleted capture brings the tenant back with its values
        values, trash = {**trash, **values}, {}
    fixed = [tk.rev, tk.epoch, tk.meta, tk.namespaces, tk.schema, tk.log]
    kinds: dict[str, bytes] = {}
    for ns in values:
        kinds[tk.ns(ns)] = b"hash"
        kinds[tk.hist(ns)] = b"zset"
    for ns in trash:
        kinds[tk.trash(ns)] = b"hash"
    for ns in dump.history:
        kinds[tk.hist(ns)] = b"zset"
    targets = list(kinds)
    # the bulk of the transaction does not depend on the live tenant: built once
    body = _tx_body(dump, tk, tenant, mode, values, trash)
    read = command("WATCH", *fixed, *targets) + b"".join(
        [
            command("GET", tk.rev),
            command("HGET", tk.meta, "schema_gen"),
            command("SMEMBERS", tk.namespaces),
        ]
        + [command("TYPE", key) for key in targets]
    )
    for _ in range(RESTORE_ATTEMPTS):
        await conn.send_packed_command(read)
        replies = await read_replies(conn, 4 + len(targets), errors=False)
        for key, reply in zip((tk.rev, tk.meta, tk.namespaces), replies[1:4], strict=True):
            if isinstance(reply, Exception):
                raise foreign_type(key)
        live_raw, gen_raw, names = replies[1:4]
        if live_raw is not None and not live_raw.isdigit():
            raise foreign_type(tk.rev)
        live_rev = int(live_raw or 0)
        doomed = fixed + [
            key
            for ns in sorted(as_text(n) for n in names)
            for key in (tk.ns(ns), tk.trash(ns), tk.hist(ns))
        ]
        spared = set(targets) - set(doomed)
        for key, kind in zip(targets, replies[4:], strict=True):
            if key in spared and kind not in (b"none", kinds[key]):
                await conn.send_packed_command(command("UNWATCH"))
                await read_replies(conn, 1)
                raise foreign_type(key)
        cmds = [command("MULTI"), *_chunked(("DEL",), _as_bytes(doomed), 1), *body]
        rev, epoch, tail = _tx_revision(
            dump, tk, tenant, mode, live_rev, gen_raw,
            actor=actor, reason=reason, log_limit=log_limit,
        )  # fmt: skip
        cmds += tail
        cmds.append(command("EXEC"))
        # a list, not one joined buffer: fakeredis's parser slows down on huge buffers
        await conn.send_packed_command(cmds)
        try:
            result = (await read_replies(conn, len(cmds)))[-1]
        except RedisTimeoutError as exc:  # EXEC was sent: all of it or none was applied
            raise Unavailable(
                f"no answer to the restore transaction of tenant {tenant!r} ({exc}); it was "
                f"applied whole or not at all: revision {rev} means it was",
                tenant=tenant,
                reason="outcome_unknown",
            ) from exc
        if result is not None:
            checked_reply(result)
            return rev, epoch, live_rev, 0
    raise Conflict(
        f"tenant {tenant!r} kept changing during the restore ({RESTORE_ATTEMPTS} attempts); "
        "nothing of it was restored",
        tenant=tenant,
        reason="concurrent_writes",
    )


def _flatten(mapping: dict[str, Any]) -> list[Any]:
    return [x for pair in mapping.items() for x in pair]


def _raw_values(flat: list[bytes]) -> dict[bytes, bytes]:
    # a record ends with its value: the first ',"value":' is structural (see _codec)
    out: dict[bytes, bytes] = {}
    for k, v in iter_flat_pairs(flat):
        at = v.find(b',"value":')
        out[k] = v[at + 9 : -1] if at >= 0 else v
    return out


async def restore_diff(store: Store, dump: TenantDump, target: str, mode: str) -> tuple[int, ...]:
    """(added, changed, removed, unchanged) keys a restore would make, comparing raw values.

    ``mode`` ``"replace"`` also counts live keys the file does not have.
    """
    tk = TenantKeys(target)
    live: dict[str, dict[bytes, bytes]] = {}
    if await store.redis.exists(tk.meta):
        for raw in await store.redis.smembers(tk.namespaces):
            ns = raw.decode() if isinstance(raw, bytes) else raw
            flat = await store.redis.execute_command("HGETALL", tk.ns(ns))
            if isinstance(flat, dict):
                flat = [x for pair in flat.items() for x in pair]
            live[ns] = _raw_values(flat)
    added = changed = removed = unchanged = 0
    for ns, flat in dump.values.items():
        have = live.get(ns, {})
        if not have:
            added += len(flat) // 2
            continue
        for key, value in _raw_values(flat).items():
            old = have.get(key)
            if old is None:
                added += 1
            elif old == value:
                unchanged += 1
            else:
                changed += 1
    if mode == "replace":
        for ns, have in live.items():
            mine = {k for k, _ in iter_flat_pairs(dump.values.get(ns, []))}
            removed += sum(1 for k in have if k not in mine)
    return added, changed, removed, unchanged


#: Runs after a restore with the tenants it wrote: (store, tenants).
AfterRestore = Callable[["Store", list[str]], Awaitable[None]]
_after_restore: list[AfterRestore] = []


def on_restored(hook: AfterRestore) -> None:
    """Install ``hook`` to run after every restore (also a failed one) with its tenants.

    The embedded store installs one that journals the restored tenants: the
    restore transactions' own connections go around the client that marks
    what to persist. A registry, so this module never imports the embedded
    store (which imports :mod:`kvconf.snapshot`, which imports this module).
    """
    if hook not in _after_restore:
        _after_restore.append(hook)


async def run_after_restore(store: Store, tenants: list[str]) -> None:
    """Run every installed :func:`on_restored` hook."""
    for hook in list(_after_restore):
        await hook(store, tenants)
