"""The watcher on a real three-primary Redis Cluster: routing, sharing, reconnects, slot moves."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.cluster import key_slot

from kvconf import Settings, Store
from kvconf._redis.names import TenantKeys
from kvconf._watch.cluster import ClusterHub, node_url
from kvconf._watch.fleet import fleet
from kvconf._watch.hub import Hub
from kvconf.watcher import Watcher

from .api_helpers import ADMIN, client, running_app
from .redis_cluster import RedisCluster
from .redis_server import RedisServer
from .test_watcher import Recorder, converge, until


@pytest.fixture
async def cstore(cluster: RedisCluster) -> AsyncIterator[Store]:
    store = Store(settings=Settings(redis_url=cluster.url), environ={})
    yield store
    await store.aclose()


def slot_of(tenant: str) -> int:
    return key_slot(TenantKeys(tenant).changes_channel.encode())


def owner(cluster: RedisCluster, slot: int) -> RedisServer:
    """The primary that serves ``slot``, as node 0 sees it."""
    with cluster.nodes[0].client() as c:
        for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == int(primary[1]))
    raise AssertionError(f"slot {slot} is not served")


def tenants_on_nodes(cluster: RedisCluster, count: int) -> dict[int, str]:
    """One fresh tenant per node port, for ``count`` different primaries."""
    found: dict[int, str] = {}
    while len(found) < count:
        tenant = f"wc-{uuid.uuid4().hex[:8]}"
        found.setdefault(owner(cluster, slot_of(tenant)).port, tenant)
    return found


def cluster_hub(watcher: Watcher) -> ClusterHub:
    hub = watcher._engine.hub
    assert isinstance(hub, ClusterHub)
    return hub


def pubsub_clients(node: RedisServer) -> dict[str, dict[str, Any]]:
    """The node's pub/sub connections by client address."""
    with node.client() as c:
        return {str(info["addr"]): info for info in c.client_list(_type="pubsub")}


def node_name(node: RedisServer) -> str:
    return f"127.0.0.1:{node.port}"


def test_node_url_keeps_scheme_credentials_and_options() -> None:
    url = "rediss+cluster://u:p%40ss@h1:7000/0?ssl_cert_reqs=none&cluster=true&socket_keepalive=1"
    assert node_url(url, "10.0.0.2", 7001) == (
        "rediss://u:p%40ss@10.0.0.2:7001/0?ssl_cert_reqs=none&socket_keepalive=1"
    )
    assert node_url("redis://h1:7000?cluster=true", "::1", 7002) == "redis://[::1]:7002"


async def test_watcher_follows_a_tenant_on_cluster(cluster: RedisCluster, cstore: Store) -> None:
    tenant = f"wc-{uuid.uuid4().hex[:8]}"
    await cstore.set_many(tenant, "ai-1", {"a": 1, "b": 2})
    async with Watcher(
        tenant, cluster.url, environ={}, fleet_interval=0.2, configure_keyspace_events=True
    ) as watcher:
        rec = Recorder(watcher)
        assert (watcher.revision, watcher.get("ai-1", "a"), watcher.stale) == (1, 1, False)
        hub = cluster_hub(watcher)
        channel = TenantKeys(tenant).changes_channel
        assert hub.node_of(watcher._engine, channel) == node_name(owner(cluster, slot_of(tenant)))
        await cstore.set_many(tenant, "ai-1", {"a": 10, "c": 3}, actor="ops")
        await cstore.set(tenant, "_defaults", "d", "x")
        result = await cstore.delete(tenant, "ai-1", "b")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert [c.revision for c in rec.changes] == [2, 3, 4]
        assert rec.changes[0].actor == "ops"
        assert not rec.problems
        assert watcher.get("ai-1", "d") == "x"
        await converge(watcher, cstore, tenant)
        # The fleet report (a pipeline on one key) works through the cluster client.
        await until(lambda: watcher._engine.reported, timeout=5)
        assert [m.instance for m in await fleet(cstore, tenant)] == [watcher.instance_id]
        # CONFIG SET went to every primary.
        for node in cluster.nodes:
            with node.client() as c:
                flags = c.config_get("notify-keyspace-events")["notify-keyspace-events"]
            assert {"K", "h", "g"} <= set(flags) or {"K", "A"} <= set(flags)


async def test_watchers_share_one_connection_per_node(cluster: RedisCluster, cstore: Store) -> None:
    by_port = tenants_on_nodes(cluster, 2)
    for tenant in by_port.values():
        await cstore.set(tenant, "ns", "k", 0)
    watchers = [
        Watcher(t, cluster.url, environ={}, fleet_interval=0)
        for t in by_port.values()
        for _ in "ab"
    ]
    try:
        for w in watchers:
            await w.start()
        hub = cluster_hub(watchers[0])
        assert all(w._engine.hub is hub for w in watchers)
        assert hub.refs == len(watchers)
        nodes = hub.node_hubs
        assert set(nodes) == {f"127.0.0.1:{port}" for port in by_port}
        await until(lambda: hub.connected, timeout=5)
        for port, node_hub in nodes.items():
            server = next(n for n in cluster.nodes if node_name(n) == port)
            assert node_hub.sockname is not None
            mine = pubsub_clients(server)[f"{node_hub.sockname[0]}:{node_hub.sockname[1]}"]
            assert int(mine["ssub"]) == 1  # one channel, two watchers
        for tenant in by_port.values():
            await cstore.set(tenant, "ns", "k", 1)
        for w in watchers:
            await converge(w, cstore, w.tenant, timeout=5)
    finally:
        for w in watchers:
            await w.aclose()
    assert not hub.node_hubs  # the last watcher closed every node hub


async def test_watchers_reconnect_after_pubsub_clients_are_killed(
    cluster: RedisCluster, cstore: Store
) -> None:
    by_port = tenants_on_nodes(cluster, 3)
    for tenant in by_port.values():
        await cstore.set(tenant, "ns", "k", 0)
    watchers = [Watcher(t, cluster.url, environ={}, fleet_interval=0) for t in by_port.values()]
    try:
        for w in watchers:
            await w.start()
        hub = cluster_hub(watchers[0])
        await until(lambda: hub.connected, timeout=5)
        before = {name: h.sockname for name, h in hub.node_hubs.items()}
        for node in cluster.nodes:
            with node.client() as c:
                c.client_kill_filter(_type="pubsub")
        await until(
            lambda: (
                hub.connected
                and all(h.sockname not in (None, before[n]) for n, h in hub.node_hubs.items())
            ),
            timeout=5,
        )
        for i, tenant in enumerate(by_port.values()):
            await cstore.set(tenant, "ns", "k", i + 1)
        for w in watchers:
            await converge(w, cstore, w.tenant, timeout=5)
            assert not w.stale
    finally:
        for w in watchers:
            await w.aclose()


def move_slot(cluster: RedisCluster, slot: int, target: RedisServer) -> None:
    """Migrate ``slot`` and its keys to ``target``, as ``redis-cli --cluster reshard`` does."""
    source = owner(cluster, slot)
    if source is target:
        return
    ids = {}
    for node in cluster.nodes:
        with node.client() as c:
            ids[node.port] = c.execute_command("CLUSTER", "MYID").decode()
    with target.client() as dst, source.client() as src:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
    for node in [target, source, *(n for n in cluster.nodes if n not in (target, source))]:
        with node.client() as c:
            c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
    # Every node agrees before the test goes on.
    for _ in range(200):
        if all(_owner_seen_by(n, slot) == target.port for n in cluster.nodes):
            return
        time.sleep(0.02)
    raise AssertionError(f"slot {slot} did not settle on {target.port}")


def _owner_seen_by(node: RedisServer, slot: int) -> int:
    with node.client() as c:
        for start, end, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    return -1


@pytest.fixture
def moved_tenant(cluster: RedisCluster) -> Iterator[str]:
    """A fresh tenant whose slot the test may move; moved back afterwards."""
    tenant = f"wc-{uuid.uuid4().hex[:8]}"
    home = owner(cluster, slot_of(tenant))
    yield tenant
    move_slot(cluster, slot_of(tenant), home)
    for node in cluster.nodes:
        with node.client() as c:
            info = c.execute_command("CLUSTER", "INFO").decode()
            nodes = c.execute_command("CLUSTER", "NODES").decode()
        assert "cluster_state:ok" in info
        assert "cluster_slots_assigned:16384" in info
        assert "->-" not in nodes  # no MIGRATING/IMPORTING left
        assert "-<-" not in nodes


async def test_watcher_follows_its_slot_to_another_node(
    cluster: RedisCluster, cstore: Store, moved_tenant: str
) -> None:
    tenant, slot = moved_tenant, slot_of(moved_tenant)
    channel = TenantKeys(tenant).changes_channel
    await cstore.set_many(tenant, "ns", {"a": 1, "b": 2})
    async with Watcher(tenant, cluster.url, environ={}, fleet_interval=0) as watcher:
        rec = Recorder(watcher)
        hub = cluster_hub(watcher)
        home = owner(cluster, slot)
        target = next(n for n in cluster.nodes if n is not home)
        assert hub.node_of(watcher._engine, channel) == node_name(home)
        await asyncio.to_thread(move_slot, cluster, slot, target)
        await until(lambda: hub.node_of(watcher._engine, channel) == node_name(target), timeout=5)
        new_hub = hub.node_hubs[node_name(target)]
        await until(lambda: new_hub.connected and channel in new_hub._confirmed, timeout=5)
        assert new_hub.sockname is not None
        mine = pubsub_clients(target)[f"{new_hub.sockname[0]}:{new_hub.sockname[1]}"]
        assert int(mine["ssub"]) >= 1
        result = await cstore.set(tenant, "ns", "a", 10)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        await converge(watcher, cstore, tenant, timeout=5)
        assert not rec.problems
        assert not watcher.stale
        # And back home: the watcher follows again.
        await asyncio.to_thread(move_slot, cluster, slot, home)
        await until(lambda: hub.node_of(watcher._engine, channel) == node_name(home), timeout=5)
        result = await cstore.set(tenant, "ns", "b", 20)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        await converge(watcher, cstore, tenant, timeout=5)
        assert node_name(target) not in hub.node_hubs  # nobody left there


async def test_api_read_cache_on_cluster(cluster: RedisCluster, cstore: Store) -> None:
    tenant = f"wc-{uuid.uuid4().hex[:8]}"
    url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
    async with running_app(cluster.url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        cache = app.state.cache
        assert cache is not None
        assert (await c.put(url, json={"value": 0})).status_code == 201
        assert (await c.get(url)).status_code == 200
        await until(lambda: cache.reader(tenant) is not None, timeout=5)
        await cstore.set(tenant, "svc", "k", 1)  # a write from elsewhere arrives by push
        await until(lambda: cache.reader(tenant) is not None and cache.reader(tenant).revision == 2)
        r = await c.get(url)
        assert (r.json()["value"], r.headers["etag"]) == (1, '"2"')
        metrics = (await c.get("/metrics")).text
        assert re.search(r'kvconf_reads_total\{source="cache"\} [1-9]', metrics)


class _Collector:
    """A hub listener that records what it hears."""

    def __init__(self) -> None:
        self.events: list[int] = []
        self.subscribed = 0
        self.disconnected = 0

    def on_event(self, event: Any) -> None:
        self.events.append(event.revision)

    def on_keyspace(self, namespace: str, op: str) -> None:
        pass

    def on_subscribed(self) -> None:
        self.subscribed += 1

    def on_disconnected(self, exc: BaseException) -> None:
        self.disconnected += 1


async def test_a_moved_subscription_drops_that_channel_only(
    cluster: RedisCluster, cstore: Store
) -> None:
    # A node hub asked for a channel whose slot another node serves hears
    # MOVED: that channel is dropped and reported, while the connection and
    # the node's other channels stay (no reconnect, no catch-up for them).
    (home_port, home_tenant), (_, away_tenant) = list(tenants_on_nodes(cluster, 2).items())
    home_channel = TenantKeys(home_tenant).changes_channel
    away_channel = TenantKeys(away_tenant).changes_channel
    lost: list[str | None] = []
    hub = Hub(f"redis://127.0.0.1:{home_port}/0", on_lost=lost.append)
    home, away = _Collector(), _Collector()
    try:
        await hub.add(home, home_channel, {})
        await until(lambda: home.subscribed == 1, timeout=5)
        first = hub.sockname
        await hub.add(away, away_channel, {})
        await until(lambda: lost == [away_channel], timeout=5)
        assert hub.is_dropped(away_channel)
        # A SUNSUBSCRIBE of a slot the node does not serve (sent on a stale
        # table) is answered MOVED too: moot, and the connection stays.
        session = hub._session
        assert session is not None
        hub._unsubscribing[away_channel] = 1
        await session.send("SUNSUBSCRIBE", away_channel)
        await until(lambda: not hub._unsubscribing, timeout=5)
        result = await cstore.set(home_tenant, "ns", "k", 1)
        await until(lambda: home.events == [result.revision], timeout=5)
        assert (hub.sockname, home.disconnected, home.subscribed) == (first, 0, 1)
    finally:
        await hub.aclose()
