"""Store behaviour, on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from kvconf import (
    EmptyChangeSet,
    HistoryTrimmed,
    InvalidInput,
    InvalidName,
    InvalidValue,
    KeyNotFound,
    KeySpec,
    Schema,
    SchemaViolation,
    Store,
    TenantExists,
    TenantNotFound,
    ValueTooLarge,
    VersionConflict,
    VersionNotFound,
)
from kvconf._codec import decode_event
from kvconf._redis.names import TenantKeys


async def test_set_get_versions_and_revisions(store: Store, tenant: str) -> None:
    first = await store.set(tenant, "ai-12", "stale_timeout", 30, actor="ops", reason="init")
    assert (first.revision, first.versions) == (1, {"stale_timeout": 1})
    second = await store.set(tenant, "ai-12", "stale_timeout", 45)
    assert (second.revision, second.versions) == (2, {"stale_timeout": 2})
    assert second.epoch == first.epoch
    entry = await store.get(tenant, "ai-12", "stale_timeout")
    assert (entry.value, entry.version, entry.revision) == (45, 2, 2)
    assert entry.updated_by == "anonymous"
    assert await store.revision(tenant) == 2
    assert tenant in await store.tenants()
    assert await store.namespaces(tenant) == ["ai-12"]


async def test_any_json_value_round_trips(store: Store, tenant: str) -> None:
    values = {
        "s": 'text ünïcode "quoted" ,"value":',
        "i": -7,
        "f": 2.5,
        "b": False,
        "n": None,
        "a": [1, "x", [None]],
        "o": {"nested": {"deep": [1, 2]}, "empty": {}, "list": []},
    }
    result = await store.set_many(tenant, "ns", values)
    assert len(set(result.versions.values())) == 1
    got = await store.get_namespace(tenant, "ns")
    assert {k: e.value for k, e in got.items()} == values
    hist = await store.history(tenant, "ns", "o")
    assert hist[0].value == values["o"]


async def test_set_many_is_one_revision_and_one_event(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "a", 1)
    result = await store.set_many(tenant, "ns", {"a": 2, "b": 3, "c": 4}, reason="bulk")
    assert result.revision == 2
    assert result.versions == {"a": 2, "b": 1, "c": 1}
    events = await store.changes_since(tenant, 1)
    assert len(events) == 1
    event = events[0]
    assert (event.revision, event.namespace, event.reason) == (2, "ns", "bulk")
    assert [(c.key, c.old_version, c.version, c.value) for c in event.changes] == [
        ("a", 1, 2, 2),
        ("b", 0, 1, 3),
        ("c", 0, 1, 4),
    ]


async def test_write_publishes_its_change_event(store: Store, tenant: str) -> None:
    pubsub = store.redis.pubsub()
    await pubsub.ssubscribe(TenantKeys(tenant).changes_channel)
    message = await pubsub.get_message(timeout=2)
    assert message is not None
    assert message["type"] == "ssubscribe"
    result = await store.set(tenant, "ns", "k", {"x": 1}, actor="me", reason="why")
    message = await pubsub.get_message(timeout=2)
    await pubsub.aclose()
    assert message is not None
    event = decode_event(message["data"])
    assert (event.tenant, event.revision, event.epoch) == (tenant, 1, result.epoch)
    assert (event.actor, event.reason) == ("me", "why")
    assert event.changes[0].value == {"x": 1}


async def test_cas_create_only_and_expected_versions(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "k", 1, expect_version=0)
    with pytest.raises(VersionConflict) as info:
        await store.set(tenant, "ns", "k", 2, expect_version=0)
    assert [(c.key, c.expected, c.actual) for c in info.value.conflicts] == [("k", 0, 1)]
    assert info.value.to_dict()["conflicts"] == [{"key": "k", "expected": 0, "actual": 1}]
    await store.set(tenant, "ns", "k", 2, expect_version=1)
    assert (await store.get(tenant, "ns", "k")).value == 2


async def test_refused_change_set_leaves_every_key_untouched(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "ns", {"a": 1, "b": 1, "c": 1})
    before = await store.read_state(tenant)
    with pytest.raises(VersionConflict) as info:
        await store.set_many(tenant, "ns", {"a": 2, "b": 2, "c": 2}, expect={"a": 1, "b": 7})
    assert [c.key for c in info.value.conflicts] == ["b"]
    with pytest.raises(KeyNotFound):
        await store.delete(tenant, "ns", ["a", "missing"])
    after = await store.read_state(tenant)
    assert after == before
    assert await store.changes_since(tenant, before.revision) == []


async def test_concurrent_cas_increments_lose_no_update(
    make_store: Callable[..., Store], tenant: str
) -> None:
    store = make_store(history_limit=1000)
    await store.set(tenant, "ns", "counter", 0)
    workers, rounds = 16, 10

    async def increment() -> None:
        for _ in range(rounds):
            while True:
                entry = await store.get(tenant, "ns", "counter")
                try:
                    await store.set(
                        tenant, "ns", "counter", entry.value + 1, expect_version=entry.version
                    )
                    break
                except VersionConflict:
                    await asyncio.sleep(0)

    await asyncio.gather(*(increment() for _ in range(workers)))
    final = await store.get(tenant, "ns", "counter")
    assert final.value == workers * rounds
    assert final.version == workers * rounds + 1
    history = await store.history(tenant, "ns", "counter", limit=1000)
    assert [v.version for v in history] == list(range(final.version, 0, -1))
    assert [v.value for v in history] == list(range(workers * rounds, -1, -1))


async def test_revisions_strictly_increase_under_concurrency(store: Store, tenant: str) -> None:
    results = await asyncio.gather(
        *(store.set(tenant, f"ns{i % 4}", f"k{i}", i) for i in range(60))
    )
    revisions = sorted(r.revision for r in results)
    assert revisions == list(range(1, 61))
    events = await store.changes_since(tenant, 0)
    assert [e.revision for e in events] == list(range(1, 61))


async def test_delete_is_a_tombstone_version(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "k", "v1")
    deleted = await store.delete(tenant, "ns", "k", reason="gone")
    assert deleted.versions == {"k": 2}
    with pytest.raises(KeyNotFound):
        await store.get(tenant, "ns", "k")
    again = await store.set(tenant, "ns", "k", "v3", expect_version=0)
    assert again.versions == {"k": 3}
    history = await store.history(tenant, "ns", "k")
    assert [(v.version, v.deleted, v.value) for v in history] == [
        (3, False, "v3"),
        (2, True, None),
        (1, False, "v1"),
    ]
    assert history[1].reason == "gone"


async def test_history_pages_newest_first(store: Store, tenant: str) -> None:
    for i in range(7):
        await store.set(tenant, "ns", "k", i)
    page1 = await store.history(tenant, "ns", "k", limit=3)
    page2 = await store.history(tenant, "ns", "k", limit=3, before=page1[-1].version)
    page3 = await store.history(tenant, "ns", "k", limit=3, before=page2[-1].version)
    assert [v.version for v in page1 + page2 + page3] == [7, 6, 5, 4, 3, 2, 1]
    assert await store.history(tenant, "ns", "k", before=1) == []
    with pytest.raises(KeyNotFound):
        await store.history(tenant, "ns", "never")


async def test_rollback_writes_old_value_as_new_version(store: Store, tenant: str) -> None:
    for value in ("a", "b", "c"):
        await store.set(tenant, "ns", "k", value)
    result = await store.rollback(tenant, "ns", "k", 1, actor="ops")
    assert result.versions == {"k": 4}
    entry = await store.get(tenant, "ns", "k")
    assert (entry.value, entry.version, entry.updated_by) == ("a", 4, "ops")
    assert (await store.history(tenant, "ns", "k", limit=1))[0].reason == "rollback to version 1"
    await store.delete(tenant, "ns", "k")
    await store.rollback(tenant, "ns", "k", 2)
    assert (await store.get(tenant, "ns", "k")).value == "b"
    with pytest.raises(VersionNotFound):
        await store.rollback(tenant, "ns", "k", 99)
    with pytest.raises(VersionConflict):
        await store.rollback(tenant, "ns", "k", 1, expect_version=3)


async def test_retention_trims_history_and_log(
    make_store: Callable[..., Store], tenant: str
) -> None:
    store = make_store(history_limit=3, log_limit=5)
    for i in range(10):
        await store.set(tenant, "ns", "k", i)
    history = await store.history(tenant, "ns", "k", limit=100)
    assert [v.version for v in history] == [10, 9, 8]
    assert [e.revision for e in await store.changes_since(tenant, 5)] == [6, 7, 8, 9, 10]
    with pytest.raises(HistoryTrimmed) as info:
        await store.changes_since(tenant, 4)
    assert info.value.oldest == 6
    with pytest.raises(VersionNotFound):
        await store.rollback(tenant, "ns", "k", 2)
    assert await store.changes_since(tenant, 10) == []


async def test_schema_refuses_whole_write_listing_every_problem(store: Store, tenant: str) -> None:
    schema = Schema(
        keys={
            "timeout": KeySpec(type="int", min=1, max=600, default=15),
            "mode": KeySpec(type="str", choices=["fast", "safe"]),
            "name": KeySpec(type="str", max_length=4),
            "ratio": KeySpec(type="float"),
        }
    )
    await store.set(tenant, "ns", "free", 1)
    await store.set_schema(tenant, "ns", schema)
    with pytest.raises(SchemaViolation) as info:
        await store.set_many(
            tenant, "ns", {"timeout": 0, "mode": "slow", "name": "too long", "ratio": True}
        )
    assert sorted((p.key, p.rule) for p in info.value.problems) == [
        ("mode", "choices"),
        ("name", "max_length"),
        ("ratio", "type"),
        ("timeout", "min"),
    ]
    assert await store.get_namespace(tenant, "ns") == {
        "free": await store.get(tenant, "ns", "free")
    }
    await store.set_many(tenant, "ns", {"timeout": 600, "mode": "safe", "ratio": 1, "other": [1]})
    assert await store.get_schema(tenant, "ns") == schema


async def test_tenant_schema_applies_unless_namespace_overrides(store: Store, tenant: str) -> None:
    await store.set_schema(tenant, "_defaults", Schema(keys={"port": KeySpec(type="int")}))
    assert tenant in await store.tenants()  # a schema write creates the tenant
    assert await store.revision(tenant) == 1
    with pytest.raises(SchemaViolation):
        await store.set(tenant, "svc", "port", "80")
    await store.set_schema(tenant, "svc", Schema(keys={"port": KeySpec(type="str")}))
    await store.set(tenant, "svc", "port", "80")
    with pytest.raises(SchemaViolation):
        await store.set(tenant, "other", "port", "80")


async def test_schema_change_seen_by_another_store(
    make_store: Callable[..., Store], tenant: str
) -> None:
    writer, admin = make_store(), make_store()
    await writer.set(tenant, "ns", "k", 1)
    await admin.set_schema(tenant, "ns", Schema(keys={"k": KeySpec(type="int", max=5)}))
    with pytest.raises(SchemaViolation):
        await writer.set(tenant, "ns", "k", 6)


async def test_schema_refused_when_current_values_break_it(store: Store, tenant: str) -> None:
    await store.set(tenant, "ns", "k", "text")
    with pytest.raises(SchemaViolation):
        await store.set_schema(tenant, "ns", Schema(keys={"k": KeySpec(type="int")}))
    assert await store.get_schema(tenant, "ns") is None


async def test_layers_with_environment(make_store: Callable[..., Store], tenant: str) -> None:
    environ = {"KVCONF_DEFAULT_STALE_TIMEOUT": "25", "KVCONF_DEFAULT_GRACE_PERIOD": "zz"}
    store = make_store(environ=environ)
    await store.create_tenant(tenant)
    await store.set_schema(
        tenant,
        "_defaults",
        Schema(
            keys={
                "stale_timeout": KeySpec(type="int", default=15),
                "grace_period": KeySpec(type="int", default=2),
                "heartbeat_interval": KeySpec(type="int", default=60),
            }
        ),
    )
    explained = await store.explain(tenant, "ai-1")
    assert explained["stale_timeout"].value == 25
    assert explained["stale_timeout"].layer == "environment"
    assert [(s.layer, s.value) for s in explained["stale_timeout"].shadowed] == [
        ("schema_default", 15)
    ]
    assert explained["grace_period"].layer == "schema_default"  # unparsable env is skipped
    await store.set(tenant, "_defaults", "heartbeat_interval", 30)
    await store.set(tenant, "ai-1", "heartbeat_interval", 10)
    hb = await store.explain_key(tenant, "ai-1", "heartbeat_interval")
    assert (hb.value, hb.layer) == (10, "namespace")
    assert [s.layer for s in hb.shadowed] == ["tenant_defaults", "schema_default"]
    assert (await store.effective(tenant, "ai-2"))["heartbeat_interval"] == 30
    unknown = await store.explain_key(tenant, "ai-1", "nothing")
    assert (unknown.value, unknown.layer) == (None, None)


@pytest.mark.parametrize(
    ("namespace", "key"),
    [("", "k"), (".hidden", "k"), ("ns", "a b"), ("ns", "x" * 129), ("ns", "ü"), ("ns/x", "k")],
)
async def test_bad_names_are_refused_before_redis(
    store: Store, tenant: str, namespace: str, key: str
) -> None:
    with pytest.raises(InvalidName):
        await store.set(tenant, namespace, key, 1)
    with pytest.raises(TenantNotFound):
        await store.revision(tenant)


async def test_bad_values_and_sizes_are_refused(
    make_store: Callable[..., Store], tenant: str
) -> None:
    store = make_store(max_value_bytes=64, max_keys_per_write=3)
    for bad in (float("nan"), {1, 2}, b"bytes", {1: "int key"}, object()):
        with pytest.raises(InvalidValue):
            await store.set(tenant, "ns", "k", bad)
    with pytest.raises(ValueTooLarge) as info:
        await store.set(tenant, "ns", "k", "x" * 100)
    assert info.value.details["limit"] == 64
    with pytest.raises(EmptyChangeSet):
        await store.set_many(tenant, "ns", {})
    with pytest.raises(InvalidInput):
        await store.set_many(tenant, "ns", {"a": 1, "b": 2, "c": 3, "d": 4})
    with pytest.raises(InvalidInput):
        await store.set(tenant, "ns", "k", 1, reason="r" * 5000)
    with pytest.raises(InvalidInput):
        await store.set_many(tenant, "ns", {"a": 1}, expect={"b": 0})
    for huge in (10**10, 10**20, -2):
        with pytest.raises(InvalidInput):
            await store.set(tenant, "ns", "a", 1, expect_version=huge)
    with pytest.raises(InvalidName):
        await store.get("bad tenant", "ns", "k")
    assert not await store.exists(tenant)


async def test_unknown_tenant_reads_are_typed_errors(store: Store, tenant: str) -> None:
    for call in (
        store.get(tenant, "ns", "k"),
        store.get_namespace(tenant, "ns"),
        store.namespaces(tenant),
        store.revision(tenant),
        store.history(tenant, "ns", "k"),
        store.changes_since(tenant, 0),
        store.read_state(tenant),
        store.info(tenant),
    ):
        with pytest.raises(TenantNotFound):
            await call
    await store.create_tenant(tenant)
    assert await store.get_namespace(tenant, "ns") == {}
    assert await store.revision(tenant) == 1  # the creation is logged as revision 1
    with pytest.raises(KeyNotFound):
        await store.get(tenant, "ns", "k")
    with pytest.raises(TenantExists):
        await store.create_tenant(tenant)


async def test_soft_and_hard_tenant_delete(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "ns", {"a": 1, "b": 2})
    await store.delete_tenant(tenant)
    assert tenant not in await store.tenants()
    with pytest.raises(TenantNotFound):
        await store.get(tenant, "ns", "a")
    with pytest.raises(TenantNotFound):
        await store.set(tenant, "ns", "a", 5)
    await store.undelete_tenant(tenant)
    assert (await store.get(tenant, "ns", "a")).value == 1
    assert tenant in await store.tenants()
    await store.delete_tenant(tenant, hard=True)
    assert await store.redis.keys(f"kvconf:{{{tenant}}}:*") == []
    fresh = await store.set(tenant, "ns", "a", 9)
    assert fresh.versions == {"a": 1}


async def test_tenants_are_isolated(store: Store, tenant: str) -> None:
    other = tenant + "-b"
    await store.set(tenant, "ns", "k", "mine")
    await store.set(other, "ns", "k", "theirs")
    assert (await store.get(tenant, "ns", "k")).value == "mine"
    assert await store.revision(tenant) == 1
    assert await store.revision(other) == 1
    assert [e.tenant for e in await store.changes_since(other, 0)] == [other]
    assert set((await store.read_state(tenant)).namespaces) == {"ns"}


async def test_change_set_across_namespaces_is_one_revision(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "a", {"x": 1, "gone": True})
    await store.set(tenant, "b", "y", 1)
    result = await store.commit_across(
        tenant,
        {"a": {"x": 2}, "b": {"y": 2, "z": [3]}},
        deletes={"a": ["gone"]},
        expect={"a": {"x": 1}, "b": {"y": 1}},
        reason="tenant rollback",
    )
    assert result.revision == 3
    assert result.namespace == "*"
    assert result.versions == {"a/x": 2, "b/y": 2, "b/z": 1, "a/gone": 2}
    (event,) = await store.changes_since(tenant, 2)
    assert event.namespace == "*"
    assert sorted((event.namespace_of(c), c.key, c.deleted) for c in event.changes) == [
        ("a", "gone", True),
        ("a", "x", False),
        ("b", "y", False),
        ("b", "z", False),
    ]
    state = await store.read_state(tenant)
    assert {k: e.value for k, e in state.namespaces["b"].items()} == {"y": 2, "z": [3]}
    assert set(state.namespaces["a"]) == {"x"}


async def test_change_set_across_namespaces_refused_whole(store: Store, tenant: str) -> None:
    await store.set_schema(tenant, "b", Schema(keys={"y": KeySpec(type="int")}))
    await store.set_many(tenant, "a", {"x": 1})
    before = await store.read_state(tenant)
    with pytest.raises(VersionConflict) as info:
        await store.commit_across(tenant, {"a": {"x": 2}, "b": {"y": 1}}, expect={"b": {"y": 4}})
    assert [(c.key, c.expected, c.actual) for c in info.value.conflicts] == [("b/y", 4, 0)]
    with pytest.raises(SchemaViolation):
        await store.commit_across(tenant, {"a": {"x": 2}, "b": {"y": "no"}})
    with pytest.raises(KeyNotFound):
        await store.commit_across(tenant, {"a": {"x": 2}}, deletes={"b": ["missing"]})
    with pytest.raises(InvalidName):
        await store.commit_across(tenant, {"a": {"x": 2}, "bad/ns": {"y": 1}})
    with pytest.raises(EmptyChangeSet):
        await store.commit_across(tenant, {})
    assert await store.read_state(tenant) == before


async def test_change_set_across_namespaces_lists_every_schema_problem(
    store: Store, tenant: str
) -> None:
    await store.set_schema(tenant, "a", Schema(keys={"x": KeySpec(type="int")}))
    await store.set_schema(tenant, "b", Schema(keys={"y": KeySpec(type="int", min=1)}))
    with pytest.raises(SchemaViolation) as info:
        await store.commit_across(tenant, {"a": {"x": "no"}, "b": {"y": 0, "z": 1}})
    assert sorted((p.key, p.rule) for p in info.value.problems) == [("a/x", "type"), ("b/y", "min")]
    with pytest.raises(SchemaViolation) as one:  # one namespace's change set names keys alone
        await store.set_many(tenant, "b", {"y": 0})
    assert [p.key for p in one.value.problems] == ["y"]


async def test_pipelined_writes_fail_alone_and_survive_script_flush(
    store: Store, tenant: str
) -> None:
    await store.set_many(tenant, "ns", {f"k{i}": 0 for i in range(20)})
    # Twenty concurrent writes share pipelines; the odd ones carry a wrong
    # expectation and must fail alone, without disturbing the others.
    results = await asyncio.gather(
        *(store.set(tenant, "ns", f"k{i}", 1, expect_version=1 if i % 2 == 0 else 7)
          for i in range(20)),
        return_exceptions=True,
    )  # fmt: skip
    assert [isinstance(r, VersionConflict) for r in results] == [i % 2 == 1 for i in range(20)]
    revisions = sorted(r.revision for r in results if not isinstance(r, BaseException))
    assert revisions == list(range(2, 12))
    await store.redis.script_flush()
    again = await asyncio.gather(*(store.set(tenant, "ns", f"k{i}", 2) for i in range(20)))
    assert sorted(r.revision for r in again) == list(range(12, 32))
    state = await store.read_state(tenant)
    assert {e.value for e in state.namespaces["ns"].values()} == {2}


async def test_histories_of_keys_sharing_a_prefix_stay_apart(
    make_store: Callable[..., Store], tenant: str
) -> None:
    store = make_store(history_limit=2)
    names = ["a", "ab", "a-b", "a_", "a.b", "A"]
    for round_ in range(4):
        await store.set_many(tenant, "ns", {n: f"{n}{round_}" for n in names})
    await store.delete(tenant, "ns", "ab")
    for name in names:
        history = await store.history(tenant, "ns", name, limit=10)
        assert all(v.value in (None, *(f"{name}{r}" for r in range(4))) for v in history)
        assert len(history) == 2  # trimmed per key, not per namespace
    assert [v.deleted for v in await store.history(tenant, "ns", "ab")] == [True, False]
    assert (await store.version(tenant, "ns", "a", 4)).value == "a3"
    with pytest.raises(VersionNotFound):
        await store.version(tenant, "ns", "a", 2)


async def test_a_tenant_with_data_is_listed_whatever_happened_to_its_registration(
    store: Store, tenant: str
) -> None:
    from kvconf._redis.names import TENANTS_KEY

    await store.set(tenant, "ns", "k", 1)
    await store.redis.srem(TENANTS_KEY, tenant)  # what a failed registration left behind
    assert tenant not in await store.tenants()
    assert await store.repair_tenants() == [tenant]
    assert tenant in await store.tenants()
    assert await store.repair_tenants() == []
    # A name listed without a live tenant (registered, then the write failed) is not shown.
    await store.redis.sadd(TENANTS_KEY, f"{tenant}-ghost")
    assert f"{tenant}-ghost" not in await store.tenants()
    await store.delete_tenant(tenant)
    await store.redis.sadd(TENANTS_KEY, tenant)  # a delete interrupted before its SREM
    assert tenant not in await store.tenants()
    assert tenant not in await store.repair_tenants()  # soft-deleted: not live


async def test_expect_minus_one_means_the_key_exists(store: Store, tenant: str) -> None:
    with pytest.raises(VersionConflict) as info:
        await store.set(tenant, "ns", "k", 1, expect_version=-1)
    assert (info.value.conflicts[0].expected, info.value.conflicts[0].actual) == (-1, 0)
    await store.set(tenant, "ns", "k", 1)
    await store.set(tenant, "ns", "k", 2)
    result = await store.set(tenant, "ns", "k", 3, expect_version=-1)
    assert result.versions == {"k": 3}
    await store.delete(tenant, "ns", "k")
    with pytest.raises(VersionConflict):
        await store.set(tenant, "ns", "k", 4, expect_version=-1)


async def test_tenant_lifecycle_is_in_the_change_log(store: Store, tenant: str) -> None:
    await store.create_tenant(tenant, actor="ops@host", reason="ticket 42")
    await store.set(tenant, "svc", "k", 1)
    await store.delete_tenant(tenant, actor="ops@host", reason="offboarding")
    await store.undelete_tenant(tenant, actor="lead@host", reason="mistake")
    events = await store.changes_since(tenant, 0)
    audit = [(e.revision, e.type, e.op, e.actor, e.reason) for e in events if e.type == "tenant"]
    assert audit == [
        (1, "tenant", "create", "ops@host", "ticket 42"),
        (3, "tenant", "soft_delete", "ops@host", "offboarding"),
        (4, "tenant", "undelete", "lead@host", "mistake"),
    ]
    assert (await store.get(tenant, "svc", "k")).value == 1
    await store.undelete_tenant(tenant)  # not deleted: no event
    assert await store.revision(tenant) == 4
    with pytest.raises(InvalidInput):
        await store.create_tenant(tenant + "-x", op='create","evil":"1')


async def test_hard_delete_goes_to_the_audit_list(store: Store, tenant: str) -> None:
    from kvconf._redis.names import AUDIT_KEY

    await store.set(tenant, "svc", "k", 1)
    await store.delete_tenant(tenant, hard=True, actor="ops@host", reason="gdpr")
    assert not await store.exists(tenant)
    import json

    entries = [json.loads(raw) for raw in await store.redis.lrange(AUDIT_KEY, 0, 50)]
    mine = [e for e in entries if e["tenant"] == tenant]
    assert len(mine) == 1
    assert mine[0]["op"] == "hard_delete"
    assert (mine[0]["actor"], mine[0]["reason"], mine[0]["revision"]) == ("ops@host", "gdpr", 2)
