"""Reading tenants out of Redis and writing them back, one script per tenant."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from . import _codec
from ._keys import PREFIX, TenantKeys
from ._scripts import Scripts
from ._snapshot_format import TenantDump, iter_flat_pairs
from .exceptions import TenantNotFound, Unavailable


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


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
    known = {_text(n) for n in await client.smembers(tk.namespaces)}
    names = sorted(known)
    async with client.pipeline(transaction=True) as pipe:
        pipe.exists(tk.meta, tk.rev)
        pipe.get(tk.rev)
        pipe.get(tk.epoch)
        pipe.hgetall(tk.meta)
        pipe.smembers(tk.namespaces)
        pipe.hgetall(tk.schema)
        pipe.zrange(tk.log, 0, -1, withscores=True)
        for ns in names:
            pipe.hgetall(tk.ns(ns))
            pipe.hgetall(f"{tk.base}:trash:ns:{ns}")
            pipe.zrange(tk.hist(ns), 0, -1)
        reply = await pipe.execute()
    exists, rev, epoch, meta, now_names, schemas, log = reply[:7]
    if not exists:
        return None
    if not {_text(n) for n in now_names} <= known:
        return await capture_by_script(Scripts(client), tenant)
    values: dict[str, list[bytes]] = {}
    trash: dict[str, list[bytes]] = {}
    history: dict[str, list[bytes]] = {}
    for i, ns in enumerate(names):
        at = 7 + 3 * i
        if reply[at]:
            values[ns] = _flat(reply[at])
        if reply[at + 1]:
            trash[ns] = _flat(reply[at + 1])
        if reply[at + 2]:
            history[ns] = list(reply[at + 2])
    flat_log: list[int | bytes] = []
    for member, score in log:
        flat_log.extend((int(score), member))
    return TenantDump(
        tenant=tenant,
        revision=int(rev) if rev and rev.isdigit() else 0,  # as tonumber() in the script
        epoch=_text(epoch or b""),
        meta={_text(k): _text(v) for k, v in iter_flat_pairs(_flat(meta))},
        namespaces=sorted(_text(n) for n in now_names),
        schemas={_text(k): v for k, v in iter_flat_pairs(_flat(schemas))},
        values=values,
        trash=trash,
        history=history,
        log=flat_log,
    )


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
        epoch=_text(epoch),
        meta={_text(k): _text(v) for k, v in iter_flat_pairs(meta)},
        namespaces=sorted(_text(n) for n in names),
        schemas={_text(k): v for k, v in iter_flat_pairs(schemas)},
        values={_text(k): v for k, v in iter_flat_pairs(values)},
        trash={_text(k): v for k, v in iter_flat_pairs(trash)},
        history={_text(k): v for k, v in iter_flat_pairs(history)},
        log=log,
    )


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
        return int(reply[1]), _text(reply[2]), int(reply[3]), int(reply[4])
    if reply[0] == b"wrongtype":
        raise Unavailable(f"redis key {_text(reply[1])} has a foreign type", reason="corrupt_state")
    raise TenantNotFound(tenant)
