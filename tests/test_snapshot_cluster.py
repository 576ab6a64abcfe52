"""Snapshots on a real three-primary Redis Cluster (no dedicated connections there:
save reads with transaction pipelines, restore runs the restore script)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvconf import Settings, Store
from kvconf._snapshot.capture import capture, capture_stream, dedicated_connections
from kvconf.snapshot import restore, save

from .redis_cluster import RedisCluster


@pytest.fixture
async def cstore(cluster: RedisCluster) -> AsyncIterator[Store]:
    store = Store(settings=Settings(redis_url=cluster.url), environ={})
    yield store
    await store.aclose()


async def test_save_and_restore_round_trip_on_cluster(cstore: Store, tmp_path: Path) -> None:
    tenants = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(6)]
    for i, t in enumerate(tenants):
        await cstore.set_many(t, "ns", {f"k{j}": j for j in range(i + 2)})
        await cstore.set(t, "other", "x", i)
    async with dedicated_connections(cstore.redis, 1) as conns:
        assert conns == []
    streamed = [d async for d in capture_stream(cstore.redis, tenants)]
    assert streamed == [await capture(cstore.redis, t) for t in tenants]
    info = await save(cstore, tmp_path, tenants)
    revs = {t.tenant: t.revision for t in info.tenants}
    for t in tenants:
        await cstore.set(t, "ns", "k0", "changed")
        await cstore.set(t, "extra", "y", 1)
    report = await restore(cstore, info.path, safety_dir=tmp_path / "safety")
    assert [r.tenant for r in report.tenants] == tenants
    for i, t in enumerate(tenants):
        state = await cstore.read_state(t)
        assert {k: e.value for k, e in state.namespaces["ns"].items()} == {
            f"k{j}": j for j in range(i + 2)
        }
        assert "extra" not in state.namespaces
        assert state.revision == revs[t] + 3  # past the live revision (two writes more)
    copy = f"c-{uuid.uuid4().hex[:8]}"
    await restore(cstore, info.path, tenants=[tenants[0]], as_tenant=copy, mode="merge")
    assert (await cstore.get(copy, "other", "x")).value == 0
