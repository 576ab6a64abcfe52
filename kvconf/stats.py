"""Size and activity figures of tenants: what an operator checks before an alert fires.

>>> one = await tenant_stats(store, "acme")   # TenantStats
>>> every = await stats(store)                # Stats: totals and each tenant

Counts come from Redis directly (``HLEN``, ``ZCARD``, ``SCARD``) and are not
read at one revision: a write between two counts may show. ``memory_bytes``
sums ``MEMORY USAGE`` over every key of the tenant; it is ``None`` where the
server has no ``MEMORY`` command (the embedded fakeredis server) or refuses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from redis.exceptions import RedisError, ResponseError

from ._redis.names import PREFIX, TenantKeys, tenant_from_key
from ._watch.fleet import fleet
from .exceptions import TenantNotFound, Unavailable
from .store import Store, tenant_keys

__all__ = ["Stats", "TenantStats", "stats", "tenant_stats"]


class TenantStats(msgspec.Struct, frozen=True):
    """One tenant's figures."""

    tenant: str
    revision: int
    namespaces: int
    keys: int
    versions: int
    log_entries: int
    schemas: int
    watchers: int
    memory_bytes: int | None


class Stats(msgspec.Struct, frozen=True):
    """Totals over every live tenant, and each tenant's figures."""

    tenants: int
    namespaces: int
    keys: int
    versions: int
    log_entries: int
    schemas: int
    watchers: int
    memory_bytes: int | None
    by_tenant: list[TenantStats]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def _memory(store: Store, keys: Iterable[str]) -> int | None:
    total = 0
    for key in keys:
        try:
            used = await store.redis.memory_usage(key)
        except ResponseError:
            return None  # no MEMORY command (fakeredis) or not allowed
        total += int(used or 0)
    return total


async def _keys_of(store: Store, tk: TenantKeys) -> list[str]:
    return [_text(k) async for k in store.redis.scan_iter(match=f"{tk.base}:*", count=1000)]


async def _tenant(store: Store, tenant: str, keys: list[str] | None) -> TenantStats:
    tk = tenant_keys(tenant)
    if not await store.exists(tenant):
        raise TenantNotFound(tenant)
    names = [_text(n) for n in await store.redis.smembers(tk.namespaces)]
    redis = store.redis
    sizes = [int(await redis.hlen(tk.ns(ns))) for ns in names]
    versions = sum([int(await redis.zcard(tk.hist(ns))) for ns in names])
    if keys is None:
        keys = await _keys_of(store, tk)
    return TenantStats(
        tenant=tenant,
        revision=int(await redis.get(tk.rev) or 0),
        namespaces=sum(1 for n in sizes if n),
        keys=sum(sizes),
        versions=versions,
        log_entries=int(await redis.zcard(tk.log)),
        schemas=int(await redis.hlen(tk.schema)),
        watchers=len(await fleet(store, tenant)),
        memory_bytes=await _memory(store, keys),
    )


async def tenant_stats(store: Store, tenant: str) -> TenantStats:
    """Figures of one live tenant; :class:`TenantNotFound` for unknown or deleted ones."""
    try:
        return await _tenant(store, tenant, None)
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc


async def stats(store: Store) -> Stats:
    """Figures of every live tenant and their totals (one key scan for all of them)."""
    try:
        by_key: dict[str, list[str]] = {}
        async for raw in store.redis.scan_iter(match=f"{PREFIX}:{{*", count=1000):
            key = _text(raw)
            owner = tenant_from_key(key)
            if owner is not None:
                by_key.setdefault(owner, []).append(key)
        found: list[TenantStats] = []
        for tenant in await store.tenants():
            try:
                found.append(await _tenant(store, tenant, by_key.get(tenant, [])))
            except TenantNotFound:
                continue  # deleted since the listing
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
    memory = [t.memory_bytes for t in found]
    return Stats(
        tenants=len(found),
        namespaces=sum(t.namespaces for t in found),
        keys=sum(t.keys for t in found),
        versions=sum(t.versions for t in found),
        log_entries=sum(t.log_entries for t in found),
        schemas=sum(t.schemas for t in found),
        watchers=sum(t.watchers for t in found),
        memory_bytes=None if any(m is None for m in memory) else sum(m or 0 for m in memory),
        by_tenant=found,
    )
