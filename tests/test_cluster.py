"""The store on a real three-primary Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from kvconf import HistoryTrimmed, Settings, Store, VersionConflict
from kvconf._codec import decode_event
from kvconf._redis.names import TenantKeys

from .redis_cluster import RedisCluster


@pytest.fixture
async def cstore(cluster: RedisCluster) -> AsyncIterator[Store]:
    store = Store(settings=Settings(redis_url=cluster.url, log_limit=5), environ={})
    yield store
    await store.aclose()


async def test_tenants_spread_over_slots_and_write_atomically(cstore: Store) -> None:
    tenants = [f"c-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    for t in tenants:
        result = await cstore.set_many(t, "ns", {"a": 1, "b": {"x": [1]}})
        assert result.revision == 1
    slots = {await cstore.redis.cluster_keyslot(TenantKeys(t).rev) for t in tenants}
    assert len(slots) > 1
    assert set(tenants) <= set(await cstore.tenants())
    t = tenants[0]
    await cstore.set(t, "ns", "a", 2, expect_version=1)
    with pytest.raises(VersionConflict):
        await cstore.set(t, "ns", "a", 3, expect_version=1)
    state = await cstore.read_state(t)
    assert state.revision == 2
    assert {k: e.value for k, e in state.namespaces["ns"].items()} == {"a": 2, "b": {"x": [1]}}
    assert [v.version for v in await cstore.history(t, "ns", "a")] == [2, 1]
    info = await cstore.info(t)
    assert info.namespaces == ["ns"]


async def test_log_trim_schema_and_hard_delete_on_cluster(cstore: Store) -> None:
    t = f"c-{uuid.uuid4().hex[:8]}"
    for i in range(8):
        await cstore.set(t, "ns", "k", i)
    with pytest.raises(HistoryTrimmed):
        await cstore.changes_since(t, 1)
    assert [e.revision for e in await cstore.changes_since(t, 5)] == [6, 7, 8]
    await cstore.delete_tenant(t)
    await cstore.undelete_tenant(t)
    assert (await cstore.get(t, "ns", "k")).value == 7
    await cstore.delete_tenant(t, hard=True)
    assert not await cstore.exists(t)


async def test_change_events_reach_a_sharded_subscriber(cstore: Store) -> None:
    t = f"c-{uuid.uuid4().hex[:8]}"
    await cstore.create_tenant(t)
    pubsub = cstore.redis.pubsub()
    await pubsub.ssubscribe(TenantKeys(t).changes_channel)
    await cstore.set(t, "ns", "k", "v")
    message = None
    for _ in range(50):
        message = await pubsub.get_sharded_message(timeout=0.1)
        if message is not None and message.get("type") == "smessage":
            break
    await pubsub.aclose()
    assert message is not None
    assert decode_event(message["data"]).changes[0].value == "v"
    await asyncio.sleep(0)
