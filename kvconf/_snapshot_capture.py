"""Reading tenants out of Redis and writing them back, one script per tenant."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import Any

from . import _codec
from ._keys import PREFIX, TenantKeys, tenant_from_key
from ._scripts import Scripts
from ._snapshot_format import TenantDump, iter_flat_pairs
from .exceptions import TenantNotFound, Unavailable

#: Per-tenant keys that are not part of a tenant's state (watcher presence).
_EPHEMERAL = frozenset({"fleet"})


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


async def scan_suffixes(client: Any, tenants: Iterable[str] | None) -> dict[str, list[str]]:
    """Every key of the given tenants (None: all), as suffixes after ``kvconf:{t}:``.

    One SCAN over the keyspace, whatever the number of tenants.
    """
    wanted = None if tenants is None else set(tenants)
    found: dict[str, list[str]] = {}
    async for raw in client.scan_iter(match=f"{PREFIX}:{{*", count=2000):
        key = _text(raw)
        tenant = tenant_from_key(key)
        if tenant is None or (wanted is not None and tenant not in wanted):
            continue
        suffix = key[len(PREFIX) + len(tenant) + 4 :]
        found.setdefault(tenant, []).append(suffix)
    return found


def history_hints(suffixes: Iterable[str]) -> list[str]:
    """The ``ns:key`` parts of the history keys among ``suffixes``."""
    return [s[5:] for s in suffixes if s.startswith("hist:")]


async def capture(
    scripts: Scripts, tenant: str, *, after: int, hints: Sequence[str]
) -> TenantDump | None:
    """One tenant at one revision (None if it has no state at all).

    ``hints`` names history keys known to exist (``ns:key``) as of revision
    ``after``; the script finds the ones created since from the log.
    """
    tk = TenantKeys(tenant)
    reply = await scripts("snapshot_read", script_keys(tk), [f"{tk.base}:", after, *hints])
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
    after: int,
    doomed: Sequence[str] = (),
) -> list[Any]:
    """ARGV of the restore script for ``dump`` restored as ``tenant``."""
    tk = TenantKeys(tenant)
    args: list[Any] = [
        mode, f"{tk.base}:", tenant, secrets.token_hex(8), dump.revision, _codec.now_iso(),
        _codec.encode(actor), _codec.encode(reason), tk.changes_channel, log_limit, after,
        dump.epoch,
    ]  # fmt: skip
    doomed = [s for s in doomed if s not in _EPHEMERAL]
    args.append(len(doomed))
    args.extend(doomed)
    args.append(len(dump.meta))
    for k, v in dump.meta.items():
        args.extend((k, v))
    args.append(len(dump.schemas))
    for k, raw in dump.schemas.items():
        args.extend((k, raw))
    args.append(len(dump.namespaces))
    args.extend(dump.namespaces)
    for section in (dump.values, dump.trash, dump.history):
        args.append(len(section))
        for name, flat in section.items():
            args.extend((name, len(flat) // 2))
            args.extend(flat)
    log = dump.log if mode != "merge" else []
    args.append(len(log) // 2)
    args.extend(rename_events(log, dump.tenant, tenant))
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
