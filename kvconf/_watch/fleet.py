"""Fleet view: which watcher instances follow a tenant, and which revision each applied.

Every running :class:`~kvconf.Watcher` reports itself every few seconds into
the tenant's fleet hash (``TenantKeys(t).fleet``), one field per instance.
Redis 7.0 has no per-field expiry, so each report carries its time and
:func:`fleet` ignores (and deletes) reports older than ``max_age``; the hash
as a whole also expires when no watcher reports any more.

>>> members = await fleet(store, "acme")
>>> [(m.instance, m.revision, m.stale) for m in members]
[('web-1:4242:9f2c', 17, False)]
"""

from __future__ import annotations

import time

import msgspec
from redis.exceptions import RedisError

from ..exceptions import Unavailable
from ..store import Store, tenant_keys

__all__ = ["DEFAULT_MAX_AGE", "FleetMember", "fleet"]

#: Reports older than this many seconds are gone (watchers report every ~5 s).
DEFAULT_MAX_AGE = 15.0


class FleetMember(msgspec.Struct, frozen=True):
    """One watcher instance's last report.

    ``reported_at`` and ``started_at`` are Unix times; ``namespaces`` is the
    watcher's namespace filter (empty: the whole tenant).
    """

    instance: str
    host: str
    pid: int
    revision: int
    epoch: str
    stale: bool
    reported_at: float
    started_at: float = 0.0
    namespaces: list[str] = []


_decoder = msgspec.json.Decoder(FleetMember)
encode_member = msgspec.json.Encoder().encode


async def fleet(
    store: Store, tenant: str, *, max_age: float = DEFAULT_MAX_AGE
) -> list[FleetMember]:
    """The watcher instances of ``tenant`` that reported within ``max_age`` seconds.

    Sorted by instance id. Expired and unreadable reports are deleted.
    """
    key = tenant_keys(tenant).fleet
    try:
        raw = await store.redis.hgetall(key)
        now = time.time()
        members: list[FleetMember] = []
        expired: list[bytes | str] = []
        for field, body in raw.items():
            try:
                member = _decoder.decode(body)
            except msgspec.DecodeError:
                expired.append(field)
                continue
            if now - member.reported_at > max_age:
                expired.append(field)
            else:
                members.append(member)
        if expired:
            await store.redis.hdel(key, *expired)
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
    return sorted(members, key=lambda m: m.instance)
