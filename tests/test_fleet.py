"""Fleet view: watchers report the revision they applied, with a short TTL."""

from __future__ import annotations

import os
import time

import msgspec

from kvconf import Store
from kvconf._redis.names import TenantKeys
from kvconf._watch.fleet import FleetMember, fleet
from kvconf.watcher import Watcher

from .test_watcher import until


async def test_watchers_report_their_applied_revision(
    store: Store, tenant: str, backend_url: str
) -> None:
    await store.set(tenant, "ns", "k", 1)
    options = {"environ": {}, "fleet_interval": 0.1, "check_interval": 0.05}
    async with (
        Watcher(tenant, backend_url, instance_id="a", **options) as first,  # type: ignore[arg-type]
        Watcher(tenant, backend_url, instance_id="b", namespaces=["ns"], **options),  # type: ignore[arg-type]
    ):
        result = await store.set(tenant, "ns", "k", 2)
        assert await first.wait_for_revision(result.revision, timeout=5)
        members: list[FleetMember] = []

        async def refresh() -> bool:
            members[:] = await fleet(store, tenant)
            return [(m.instance, m.revision) for m in members] == [("a", 2), ("b", 2)]

        deadline = time.monotonic() + 5
        while not await refresh():
            assert time.monotonic() < deadline, members
        a, b = members
        assert (a.pid, a.stale, a.epoch, a.namespaces) == (os.getpid(), False, first.epoch, [])
        assert b.namespaces == ["_defaults", "ns"]
        assert time.time() - a.reported_at < 5
    assert await fleet(store, tenant) == []


async def test_fleet_forgets_reports_older_than_max_age(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "k", 1)
    key = TenantKeys(tenant).fleet
    old = FleetMember(instance="gone", host="h", pid=1, revision=1, epoch="e", stale=False,
                      reported_at=time.time() - 60)  # fmt: skip
    fresh = msgspec.structs.replace(old, instance="here", reported_at=time.time())
    await store.redis.hset(key, mapping={
        "gone": msgspec.json.encode(old), "here": msgspec.json.encode(fresh), "junk": b"{"
    })  # fmt: skip
    assert [m.instance for m in await fleet(store, tenant)] == ["here"]
    assert sorted(await store.redis.hkeys(key)) == [b"here"]
    assert await fleet(store, tenant, max_age=0.0) == []
    await until(lambda: True)
