"""Fleet view: watchers report the revision they applied, with a short TTL."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import msgspec
import pytest

from kvconf import Store
from kvconf._redis.names import TenantKeys
from kvconf._watch import registry
from kvconf._watch.fleet import FleetMember, fleet
from kvconf.watcher import Watcher

from .redis_server import RedisServer
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


@pytest.mark.real_redis
async def test_watchers_of_a_tenant_share_one_check_and_one_report(
    redis_server: RedisServer, tenant: str
) -> None:
    """50 idle watchers of one tenant cost Redis what one does: counted, not timed."""
    url = redis_server.url
    async with Store(url) as store:
        await store.set(tenant, "ns", "k", 1)
        options: dict[str, Any] = {"environ": {}, "check_interval": 0.5, "fleet_interval": 1.0}
        watchers = [Watcher(tenant, url, instance_id=f"w{i:02}", **options) for i in range(50)]
        try:
            for watcher in watchers:
                await watcher.start()
            monitors = {w._engine.monitor for w in watchers}
            assert len(monitors) == 1
            await until(lambda: all(w._engine.reported for w in watchers), timeout=5)
            assert len(await fleet(store, tenant)) == 50  # every watcher is in the report
            admin = redis_server.client()
            before = admin.info("stats")["total_commands_processed"]
            await asyncio.sleep(3)
            idle = admin.info("stats")["total_commands_processed"] - before - 1
            admin.close()
            # Per 3 s: 6 MGETs, at most 6 PINGs of the shared pub/sub connection,
            # 3 reports of 2 commands. Per watcher it was 6 MGETs and 3 reports each.
            assert idle <= 24, idle
        finally:
            for watcher in watchers:
                await watcher.aclose()
        assert await fleet(store, tenant) == []
        # The last watcher closed the shared monitor and forgot it.
        assert monitors.isdisjoint(registry._monitors.values())
        assert all(m is not None and m.closing for m in monitors)
