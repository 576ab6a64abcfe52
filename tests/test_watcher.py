"""Watcher behaviour on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kvconf import InvalidInput, KeySpec, Schema, Store, TenantNotFound, Unavailable
from kvconf._redis.connect import _servers
from kvconf._redis.names import TenantKeys
from kvconf._watch import hub as hubs
from kvconf._watch import registry
from kvconf.watcher import Change, Resync, ValueChange, Watcher

from .redis_server import RedisServer, free_port

# -- helpers shared with the fault tests -----------------------------------------


class Recorder:
    """Collects changes and checks, at each one, the invariants of invariant 5."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher
        self.changes: list[Change] = []
        self.resyncs: list[Resync] = []
        self.problems: list[str] = []
        self._last: tuple[str, int] = ("", 0)
        watcher.on_change(self._on_change)
        watcher.on_resync(self.resyncs.append)

    def _on_change(self, change: Change) -> None:
        epoch = self.watcher.epoch
        last_epoch, last_rev = self._last
        if epoch == last_epoch and change.revision < last_rev:
            self.problems.append(f"revision went back {last_rev} -> {change.revision}")
        self._last = (epoch, change.revision)
        self.changes.append(change)


async def store_values(store: Store, tenant: str, namespaces: list[str] | None = None) -> Any:
    """(revision, {namespace: {key: value}}) read atomically from the store."""
    state = await store.read_state(tenant, namespaces)
    values = {ns: {k: e.value for k, e in es.items()} for ns, es in state.namespaces.items()}
    return state.revision, {ns: v for ns, v in values.items() if v}


async def converge(
    watcher: Watcher, store: Store, tenant: str, *, timeout: float = 15.0, namespaces: Any = None
) -> None:
    """Wait until the watcher's cache equals the store's state (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            rev, values = await store_values(store, tenant, namespaces)
        except Unavailable:
            rev, values = -1, None
        if (watcher.revision, watcher.snapshot()) == (rev, values):
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"watcher at {watcher.revision} {watcher.snapshot()} != store at {rev} {values}"
            )
        await asyncio.sleep(0.05)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def drop_events(watcher: Watcher, revisions: set[int]) -> None:
    """Test hook: the watcher never sees the published events of ``revisions``.

    The hub hands events to the watcher's engine, so this swaps the engine's
    class for a subclass that drops them.
    """
    engine = watcher._engine

    class Dropping(type(engine)):  # type: ignore[misc]
        def on_event(self, event: Any) -> None:
            if event.revision not in revisions:
                super().on_event(event)

    engine.__class__ = Dropping


# -- following -------------------------------------------------------------------


async def test_initial_state_then_changes_in_order(store: Store, tenant: str, backend_url: str):
    await store.set_many(tenant, "ai-12", {"a": 1, "b": 2})
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        rec = Recorder(watcher)
        assert (watcher.revision, watcher.get("ai-12", "a"), watcher.stale) == (1, 1, False)
        assert watcher.epoch == (await store.info(tenant)).epoch
        await store.set_many(tenant, "ai-12", {"a": 10, "c": 3}, actor="ops", reason="tune")
        result = await store.delete(tenant, "ai-12", "b")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert [c.revision for c in rec.changes] == [2, 3]
        first, second = rec.changes
        assert (first.actor, first.reason, first.resync) == ("ops", "tune", False)
        assert {k: (v.old, v.new) for k, v in first.changed.items()} == {"a": (1, 10)}
        assert {k: (v.old, v.new, v.version) for k, v in first.added.items()} == {"c": (None, 3, 1)}
        assert {k: (v.old, v.old_version) for k, v in second.removed.items()} == {"b": (2, 1)}
        assert watcher.entry("ai-12", "a").version == 2  # type: ignore[union-attr]
        assert watcher.entry("ai-12", "b") is None
        await converge(watcher, store, tenant)
        assert rec.problems == []
        assert watcher.last_synced_at is not None


async def test_tenant_created_after_the_watcher_started(store: Store, tenant: str, backend_url):
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        assert (watcher.revision, watcher.snapshot()) == (0, {})
        await store.set(tenant, "ns", "k", "v")
        await converge(watcher, store, tenant)
        assert watcher.get("ns", "k") == "v"


async def test_effective_get_uses_the_store_layers(make_store, tenant: str, backend_url: str):
    env = {"KVCONF_DEFAULT_FROM_ENV": "25", "KVCONF_DEFAULT_ONLY_ENV": "x"}
    store = make_store(environ=env)
    schema = Schema(keys={"from_env": KeySpec(type="int"), "sch": KeySpec(type="int", default=7)})
    await store.set_many(tenant, "_defaults", {"shared": "d", "own": "d"})
    await store.set_schema(tenant, "_defaults", schema)
    await store.set_many(tenant, "ns", {"own": "n"})
    async with Watcher(tenant, backend_url, environ=env) as watcher:
        expected = await store.effective(tenant, "ns")
        assert watcher.namespace("ns") == expected
        assert expected == {"own": "n", "shared": "d", "sch": 7}
        assert watcher.get("ns", "from_env") == 25
        assert watcher.get("ns", "only_env") == "x"
        assert watcher.get("ns", "nothing", "dflt") == "dflt"
        assert watcher.get("other", "shared") == "d"
        result = await store.set(tenant, "_defaults", "shared", "d2")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert watcher.get("ns", "shared") == "d2"
        result = await store.delete(tenant, "ns", "own")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert watcher.get("ns", "own") == "d"
        schema2 = Schema(keys={"sch": KeySpec(type="int", default=8)})
        rev = await store.set_schema(tenant, "_defaults", schema2)
        assert await watcher.wait_for_revision(rev, timeout=5)
        await until(lambda: watcher.get("ns", "sch") == 8)
        assert watcher.namespace("ns") == await store.effective(tenant, "ns")


async def test_a_schema_change_calls_back_with_the_effective_values_it_changed(
    store: Store, tenant: str, backend_url: str
):
    await store.set_many(tenant, "svc", {"port": 80})
    await store.set_many(tenant, "web", {"port": 81})
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        seen: list[Change] = []
        watcher.on_change(seen.append)
        ttl = Schema(keys={"ttl": KeySpec(type="int", default=30)})
        rev = await store.set_schema(tenant, "svc", ttl, actor="ops")
        assert await watcher.wait_for_revision(rev, timeout=5)
        assert [(c.namespace, c.reason, c.actor, c.revision) for c in seen] == [
            ("svc", "schema", "ops", rev)
        ]
        assert seen[0].added == {"ttl": ValueChange(None, 30, 0, 0)}
        assert watcher.get("svc", "ttl") == 30

        # tenant-wide: a default that own values shadow changes only _defaults itself
        seen.clear()
        shared = Schema(keys={"port": KeySpec(type="int", default=1), "ttl": KeySpec(type="int")})
        rev = await store.set_schema(tenant, "_defaults", shared)
        assert await watcher.wait_for_revision(rev, timeout=5)
        assert [(c.namespace, c.added) for c in seen] == [
            ("_defaults", {"port": ValueChange(None, 1, 0, 0)})
        ]
        assert watcher.namespace("_defaults") == await store.effective(tenant, "_defaults")
        seen.clear()

        rev = await store.set_schema(tenant, "svc", None)  # the ttl default goes away
        assert await watcher.wait_for_revision(rev, timeout=5)
        assert [(c.namespace, c.removed) for c in seen] == [
            ("svc", {"ttl": ValueChange(30, None, 0, 0)})
        ]
        assert watcher.get("svc", "ttl", "gone") == "gone"
        assert watcher.namespace("svc") == await store.effective(tenant, "svc")


async def test_namespace_filter_follows_defaults_too(store: Store, tenant: str, backend_url):
    await store.set(tenant, "mine", "k", 1)
    await store.set(tenant, "other", "k", 1)
    await store.set(tenant, "_defaults", "d", 1)
    async with Watcher(tenant, backend_url, namespaces=["mine"], environ={}) as watcher:
        rec = Recorder(watcher)
        assert watcher.snapshot() == {"mine": {"k": 1}, "_defaults": {"d": 1}}
        await store.set(tenant, "other", "k", 2)
        result = await store.set(tenant, "mine", "k", 2)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert [c.namespace for c in rec.changes] == ["mine"]
        assert watcher.get("mine", "d") == 1
        with pytest.raises(InvalidInput):
            watcher.get("other", "k")
        await converge(watcher, store, tenant, namespaces=["mine", "_defaults"])


# -- callbacks and bindings ---------------------------------------------------------


async def test_callback_filters_async_callbacks_and_a_raising_one(
    store: Store, tenant: str, backend_url: str, caplog: pytest.LogCaptureFixture
):
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        seen: dict[str, list[int]] = {"all": [], "ns": [], "key": [], "async": []}
        watcher.on_change(lambda c: seen["all"].append(c.revision))
        watcher.on_change(lambda c: seen["ns"].append(c.revision), namespace="a")
        watcher.on_change(lambda c: seen["key"].append(c.revision), namespace="a", key="x")

        def boom(change: Change) -> None:
            raise RuntimeError("callback bug")

        async def slow(change: Change) -> None:
            await asyncio.sleep(0.01)
            seen["async"].append(change.revision)

        async def async_boom(change: Change) -> None:
            raise RuntimeError("async callback bug")

        watcher.on_change(boom)
        watcher.on_change(async_boom)
        watcher.on_change(slow)
        cancel = watcher.on_change(lambda c: seen.setdefault("cancelled", []).append(1))
        cancel()
        with caplog.at_level(logging.ERROR, logger="kvconf.watcher"):
            await store.set(tenant, "a", "x", 1)
            await store.set(tenant, "a", "y", 1)
            last = await store.set(tenant, "b", "x", 1)
            assert await watcher.wait_for_revision(last.revision, timeout=5)
            await until(lambda: len(seen["async"]) == 3)
        assert seen == {"all": [1, 2, 3], "ns": [1, 2], "key": [1], "async": [1, 2, 3]}
        assert "callback bug" in caplog.text
        assert "async callback bug" in caplog.text
        assert not watcher.stale


class Limits(msgspec.Struct, frozen=True):
    low: int = 0
    high: int = 100
    name: str = "x"


async def test_binding_is_typed_live_and_never_half_a_change_set(
    store: Store, tenant: str, backend_url: str, caplog: pytest.LogCaptureFixture
):
    await store.set_many(tenant, "lim", {"low": 1, "high": 1})
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        limits = watcher.bind("lim", Limits)
        assert limits.value == Limits(low=1, high=1)
        torn: list[Limits] = []
        watcher.on_change(
            lambda c: torn.append(limits.value) if limits.value.low != limits.value.high else None
        )
        for i in range(2, 30):
            await store.set_many(tenant, "lim", {"low": i, "high": i})
        await until(lambda: limits.value.low == 29)
        assert torn == []
        with caplog.at_level(logging.ERROR, logger="kvconf.watcher"):
            result = await store.set(tenant, "lim", "low", "not a number")
            assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert limits.value == Limits(low=29, high=29)
        assert limits.error is not None
        result = await store.set(tenant, "lim", "low", 5)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert (limits.value.low, limits.error) == (5, None)
        with pytest.raises(AttributeError):
            limits.value = Limits(low=0, high=0)  # type: ignore[misc]
        with pytest.raises(InvalidInput):
            watcher.bind("bad", msgspec.defstruct("Need", [("req", int)]))


async def test_wait_for_revision_times_out(store: Store, tenant: str, backend_url: str):
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        assert await watcher.wait_for_revision(0)
        assert not await watcher.wait_for_revision(5, timeout=0.2)


# -- gaps ---------------------------------------------------------------------------


async def test_dropped_event_is_fetched_from_the_log(store: Store, tenant: str, backend_url):
    await store.set(tenant, "ns", "k", 0)
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        rec = Recorder(watcher)
        drop_events(watcher, {3})
        for i in range(1, 6):
            await store.set_many(tenant, "ns", {"k": i, f"k{i}": i})
        await converge(watcher, store, tenant)
        assert [c.revision for c in rec.changes] == [2, 3, 4, 5, 6]
        assert not any(c.resync for c in rec.changes)
        assert all(c.keys == {"k", f"k{c.revision - 1}"} for c in rec.changes)
        assert rec.problems == []


async def test_lost_last_event_is_noticed_by_the_revision_check(
    store: Store, tenant: str, backend_url: str
):
    await store.set(tenant, "ns", "k", 0)
    async with Watcher(tenant, backend_url, environ={}, check_interval=0.2) as watcher:
        drop_events(watcher, {2})
        await store.set(tenant, "ns", "k", 1)
        await converge(watcher, store, tenant, timeout=5)


async def test_gap_older_than_the_log_forces_a_full_resync(make_store, tenant: str, backend_url):
    store = make_store(environ={}, log_limit=3)
    await store.set_many(tenant, "ns", {"a": 0, "gone": 0})
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        rec = Recorder(watcher)
        drop_events(watcher, set(range(2, 9)))
        for i in range(1, 7):
            await store.set(tenant, "ns", "a", i)
        await store.delete(tenant, "ns", "gone")
        await store.set(tenant, "ns", "b", 1)
        await converge(watcher, store, tenant)
        assert [r.reason for r in rec.resyncs] == ["trimmed"]
        (net,) = [c for c in rec.changes if c.resync]
        assert (net.revision, set(net.added), set(net.changed), set(net.removed)) == (
            9,
            {"b"},
            {"a"},
            {"gone"},
        )
        assert net.changed["a"].old == 0
        assert net.changed["a"].new == 6
        assert rec.problems == []


async def test_new_epoch_means_a_full_relist(store: Store, tenant: str, backend_url: str):
    await store.set_many(tenant, "ns", {"a": 1, "b": 1})
    async with Watcher(tenant, backend_url, environ={}, check_interval=0.2) as watcher:
        rec = Recorder(watcher)
        old_epoch = watcher.epoch
        await store.delete_tenant(tenant, hard=True)
        await store.set(tenant, "ns", "a", 2)
        await converge(watcher, store, tenant)
        assert watcher.epoch != old_epoch
        assert watcher.snapshot() == {"ns": {"a": 2}}
        assert any(c.resync for c in rec.changes)


async def test_out_of_band_hset_triggers_a_resync_on_fakeredis(tenant: str) -> None:
    url = f"memory://oob-{tenant}"
    try:
        async with Store(settings=_settings(url)) as store:
            await out_of_band_edit(store, tenant, url, configure=False)
    finally:
        _servers.pop(url.removeprefix("memory://"), None)


async def test_out_of_band_hset_on_real_redis(redis_server: RedisServer, tenant: str):
    async with Store(settings=_settings(redis_server.url)) as store:
        await out_of_band_edit(store, tenant, redis_server.url, configure=True)


def _settings(url: str) -> Any:
    from kvconf import Settings

    return Settings(redis_url=url)


async def out_of_band_edit(store: Store, tenant: str, url: str, *, configure: bool) -> None:
    await store.set_many(tenant, "ns", {"a": 1, "b": 1})
    async with Watcher(
        tenant, url, environ={}, check_interval=5, configure_keyspace_events=configure
    ) as watcher:
        rec = Recorder(watcher)
        for i in range(5):  # kvconf's own writes cause no resync
            await store.set(tenant, "ns", "a", i)
        await converge(watcher, store, tenant)
        await asyncio.sleep(0.2)
        assert rec.resyncs == []
        record = msgspec.json.encode(
            {"version": 9, "revision": 1, "updated_at": "2026-01-01T00:00:00Z",
             "updated_by": "operator", "value": "edited"}
        )  # fmt: skip
        await store.redis.hset(TenantKeys(tenant).ns("ns"), "b", record)
        await until(lambda: watcher.get("ns", "b") == "edited", timeout=3)
        await converge(watcher, store, tenant)
        assert [r.reason for r in rec.resyncs] == ["keyspace"]
        assert rec.changes[-1].resync
        assert set(rec.changes[-1].changed) == {"b"}


# -- sharing, sync facade, cache file ----------------------------------------------------


async def test_watchers_in_one_process_share_one_pubsub_connection(
    shared_redis: RedisServer, tenant: str
):
    url = shared_redis.url
    async with Store(settings=_settings(url)) as store:
        await store.set(tenant, "a", "k", 1)
        await store.set(tenant + "x", "a", "k", 1)
        async with (
            Watcher(tenant, url, environ={}) as w1,
            Watcher(tenant, url, namespaces=["a"], environ={}) as w2,
            Watcher(tenant + "x", url, environ={}) as w3,
        ):
            hub = w1._engine.hub
            assert hub is w2._engine.hub is w3._engine.hub
            assert hub is not None
            assert hub.refs == 3
            name = f"kvw-{tenant}"
            await hub.pubsub_client.client_setname(name)
            result = await store.set(tenant, "a", "k", 2)
            other = await store.set(tenant + "x", "a", "k", 2)
            assert await w1.wait_for_revision(result.revision, timeout=5)
            assert await w2.wait_for_revision(result.revision, timeout=5)
            assert await w3.wait_for_revision(other.revision, timeout=5)
            clients = await store.redis.client_list(_type="pubsub")
            mine = [c for c in clients if c.get("laddr") and _hub_conn(hub, c)]
            assert len(mine) == 1
        # Closing the last watcher releases this loop's hub and its connection.
        assert all(h is not hub for h in registry._hubs.values())
        assert hub.sockname is None


def _hub_conn(hub: hubs.Hub, client: dict[str, Any]) -> bool:
    if hub.sockname is None:
        return False
    host, port = hub.sockname
    return bool(client["addr"] == f"{host}:{port}")


async def test_cache_file_serves_a_start_without_redis(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
):
    path = tmp_path / "cache" / f"{tenant}.json"
    await store.set_many(tenant, "ns", {"a": 1, "b": [1, 2]})
    async with Watcher(tenant, backend_url, environ={}, cache_file=path) as watcher:
        result = await store.set(tenant, "ns", "a", 2)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with Watcher(tenant, dead, environ={}, cache_file=path, timeout=0.5) as cold:
        assert cold.stale
        assert "startup" in cold.stale_reasons
        assert (cold.revision, cold.get("ns", "a"), cold.get("ns", "b")) == (2, 2, [1, 2])
    with pytest.raises(Unavailable):
        async with Watcher(tenant, dead, environ={}, timeout=0.5):
            pass


async def test_gap_across_a_schema_change_converges(store: Store, tenant: str, backend_url: str):
    await store.set(tenant, "ns", "a", 1)
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        drop_events(watcher, {2, 3})
        schema = Schema(keys={"d": KeySpec(type="int", default=4)})
        await store.set_schema(tenant, "ns", schema)
        await store.set(tenant, "ns", "a", 2)
        await store.set(tenant, "ns", "b", 3)
        await converge(watcher, store, tenant)
        assert watcher.get("ns", "d") == 4


async def test_change_set_across_namespaces_is_applied_whole(
    store: Store, tenant: str, backend_url: str
):
    await store.set_many(tenant, "a", {"x": 0, "gone": 1})
    async with Watcher(tenant, backend_url, namespaces=["a", "b"], environ={}) as watcher:
        rec = Recorder(watcher)
        torn: list[tuple[Any, Any]] = []

        def check(change: Change) -> None:
            pair = (watcher.get("a", "x"), watcher.get("b", "x"))
            if pair[0] != pair[1]:
                torn.append(pair)

        watcher.on_change(check)
        for i in range(1, 6):
            result = await store.commit_across(
                tenant, {"a": {"x": i}, "b": {"x": i}, "c": {"x": i}},
                deletes={"a": ["gone"]} if i == 1 else None,
            )  # fmt: skip
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert torn == []
        assert [(c.revision, c.namespace) for c in rec.changes[:2]] == [(2, "a"), (2, "b")]
        assert set(rec.changes[0].removed) == {"gone"}
        await converge(watcher, store, tenant, namespaces=["a", "b", "_defaults"])


async def test_soft_delete_and_undelete_reach_watchers(store: Store, tenant: str, backend_url):
    """Lifecycle events are in the log: a watcher empties on a soft delete and refills."""
    await store.set_many(tenant, "svc", {"a": 1})
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        resyncs: list[Resync] = []
        watcher.on_resync(resyncs.append)
        await store.delete_tenant(tenant, actor="ops", reason="retire")
        assert await watcher.wait_for_revision(2, timeout=5)
        assert watcher.get("svc", "a") is None
        await store.undelete_tenant(tenant, actor="ops", reason="oops")
        assert await watcher.wait_for_revision(3, timeout=5)
        assert watcher.get("svc", "a") == 1
        assert [r.reason for r in resyncs] == ["tenant", "tenant"]


async def test_a_first_write_during_the_startup_read_is_not_lost(
    store: Store, tenant: str, backend_url: str, monkeypatch: pytest.MonkeyPatch
):
    """The tenant is created between the watcher's state read (not found) and its
    position read: the watcher must not take the new revision as applied to an
    empty cache (a Redis restart without persistence gave exactly this)."""
    real = Store.read_state
    armed = [True]

    async def read_state(self: Store, name: str, namespaces: Any = None) -> Any:
        try:
            return await real(self, name, namespaces)
        except TenantNotFound:
            if armed and name == tenant:
                armed.clear()
                await store.set_many(tenant, "s", {"first": 1})
            raise

    monkeypatch.setattr(Store, "read_state", read_state)
    async with Watcher(tenant, backend_url, environ={}) as watcher:
        assert not armed
        await store.set(tenant, "s", "second", 2)
        await converge(watcher, store, tenant, timeout=3)
        assert watcher.snapshot() == {"s": {"first": 1, "second": 2}}
