"""Time travel: state at a revision, diffs and rollbacks over the store."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from kvconf import Store
from kvconf.exceptions import HistoryTrimmed, InvalidInput, VersionConflict, VersionNotFound
from kvconf.models import Entry, KeySpec, Schema
from kvconf.timeline import (
    KeyState,
    diff,
    plan_rollback,
    read_log,
    rollback,
    state_at,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def values(point: dict[str, dict[str, KeyState]]) -> dict[str, dict[str, object]]:
    return {ns: {k: s.value for k, s in e.items()} for ns, e in point.items()}


async def test_state_at_each_revision(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "a", {"x": 1, "y": 2})  # r1
    await store.set(tenant, "b", "z", "hello")  # r2
    await store.set(tenant, "a", "x", 10)  # r3
    await store.delete(tenant, "a", "y")  # r4
    await store.set_schema(tenant, "a", Schema(keys={"x": KeySpec(type="int")}))  # r5
    await store.set(tenant, "a", "y", 3)  # r6
    expected = {
        0: {},
        1: {"a": {"x": 1, "y": 2}},
        2: {"a": {"x": 1, "y": 2}, "b": {"z": "hello"}},
        3: {"a": {"x": 10, "y": 2}, "b": {"z": "hello"}},
        4: {"a": {"x": 10}, "b": {"z": "hello"}},
        5: {"a": {"x": 10}, "b": {"z": "hello"}},
        6: {"a": {"x": 10, "y": 3}, "b": {"z": "hello"}},
    }
    for rev, want in expected.items():
        assert values((await state_at(store, tenant, rev)).namespaces) == want, rev
    only_b = await state_at(store, tenant, 1, ["b"])
    assert only_b.namespaces == {}
    with pytest.raises(InvalidInput):
        await state_at(store, tenant, 7)


async def test_diff_between_revisions(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "a", {"x": 1, "y": 2})
    await store.set_many(tenant, "a", {"x": 5, "w": 0})
    await store.delete(tenant, "a", "y")
    changes = (await diff(store, tenant, 1)).changes
    assert [(c.key, c.change) for c in changes] == [
        ("w", "added"),
        ("x", "changed"),
        ("y", "removed"),
    ]
    assert changes[1].old is not None
    assert changes[1].old.value == 1
    two = await diff(store, tenant, 1, 2, namespace="a")
    assert [(c.key, c.change) for c in two.changes] == [("w", "added"), ("x", "changed")]
    assert (await diff(store, tenant, 3, 3)).changes == []


async def test_rollback_namespace_is_one_revision_with_cas(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "a", {"x": 1, "y": 2})  # r1
    await store.set_many(tenant, "a", {"x": 5, "w": 0})  # r2
    await store.delete(tenant, "a", "y")  # r3
    await store.set(tenant, "b", "q", 1)  # r4
    results = await rollback(store, tenant, 1, namespace="a", actor="ops")
    assert len(results) == 1
    assert results[0].revision == 5
    state = await store.read_state(tenant)
    assert {k: e.value for k, e in state.namespaces["a"].items()} == {"x": 1, "y": 2}
    assert state.namespaces["b"]["q"].value == 1
    event = (await read_log(store, tenant, 4))[0]
    assert event.reason == "rollback to revision 1"
    assert event.actor == "ops"
    assert await rollback(store, tenant, 5, namespace="a") == []
    (whole,) = await rollback(store, tenant, 0)
    assert (whole.namespace, whole.revision) == ("*", 6)  # the whole tenant: one revision
    assert all(not e for e in (await store.read_state(tenant)).namespaces.values())


def test_plan_rollback_expects_every_touched_key() -> None:
    def entry(value: object, version: int) -> Entry:
        return Entry(value, version, 1, NOW, "x")

    def state(value: object) -> KeyState:
        return KeyState(value, 1, 1, NOW, "x")

    current = {"a": {"x": entry(1, 3), "gone": entry(0, 2), "same": entry(True, 1)}}
    target = {"a": {"x": state(2), "new": state("n"), "same": state(True)}, "b": {"k": state(1)}}
    plans = plan_rollback(current, target)
    assert [(p.namespace, p.values, p.deletes, p.expect) for p in plans] == [
        ("a", {"x": 2, "new": "n"}, ["gone"], {"x": 3, "new": 0, "gone": 2}),
        ("b", {"k": 1}, [], {"k": 0}),
    ]
    flipped = plan_rollback({"a": {"v": entry(1, 1)}}, {"a": {"v": state(True)}})
    assert flipped[0].values == {"v": True}


async def test_trimmed_history_is_refused(make_store: Callable[..., Store], tenant: str) -> None:
    store = make_store(environ={}, log_limit=2, history_limit=2)
    for i in range(5):
        await store.set(tenant, "a", "x", i)
    with pytest.raises(HistoryTrimmed):
        await state_at(store, tenant, 1)
    with pytest.raises(HistoryTrimmed):
        await read_log(store, tenant, 0)
    small = make_store(environ={}, log_limit=100, history_limit=1)
    other = tenant + "-h"
    for i in range(3):
        await small.set(other, "a", "x", i)
    with pytest.raises(VersionNotFound):
        await state_at(small, other, 1)


async def test_concurrent_write_makes_rollback_fail_whole(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "a", {"x": 1, "y": 1})
    await store.set_many(tenant, "a", {"x": 2, "y": 2})
    original = store.commit

    async def racing(*args: object, **kwargs: object) -> object:
        await original(tenant, "a", {"y": 99})
        return await original(*args, **kwargs)  # type: ignore[arg-type]

    store.commit = racing  # type: ignore[method-assign,assignment]
    with pytest.raises(VersionConflict):
        await rollback(store, tenant, 1, namespace="a")
    store.commit = original  # type: ignore[method-assign]
    assert (await store.get(tenant, "a", "x")).value == 2


def test_cli_diff(shared_redis: object, tenant: str) -> None:
    import asyncio

    import msgspec
    from typer.testing import CliRunner

    from kvconf.cli import app

    url = shared_redis.url  # type: ignore[attr-defined]

    async def seed() -> None:
        async with Store(url) as store:
            await store.set_many(tenant, "a", {"x": 1, "pw": "old"})
            await store.set_schema(tenant, "a", Schema(keys={"pw": KeySpec(sensitive=True)}))
            await store.set_many(tenant, "a", {"x": 2, "pw": "new"})

    asyncio.run(seed())
    runner = CliRunner()
    args = ["diff", tenant, "a", "--from", "1", "--json", "--redis-url", url]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = msgspec.json.decode(result.output)
    assert {c["key"]: (c["old"], c["new"]) for c in out["changes"]} == {
        "pw": ("***", "***"),
        "x": (1, 2),
    }
    shown = runner.invoke(app, [*args, "--show-secrets"])
    assert '"new"' in shown.output
    table = runner.invoke(app, ["diff", tenant, "--from", "0", "--to", "1", "--redis-url", url])
    assert table.exit_code == 0
    assert "added" in table.output
    missing = runner.invoke(app, ["diff", tenant + "-no", "--redis-url", url])
    assert missing.exit_code == 3


async def test_tenant_rollback_racing_a_write_fails_whole(store: Store, tenant: str) -> None:
    await store.set(tenant, "a", "x", 1)  # r1
    await store.set(tenant, "b", "y", 1)  # r2
    await store.set(tenant, "a", "x", 2)  # r3
    await store.set(tenant, "b", "y", 2)  # r4
    original = store.commit_across

    async def racing(t: str, *args: object, **kwargs: object) -> object:
        await store.set(tenant, "b", "y", 99)  # lands between planning and committing
        return await original(t, *args, **kwargs)  # type: ignore[arg-type]

    store.commit_across = racing  # type: ignore[method-assign,assignment]
    with pytest.raises(VersionConflict) as caught:
        await rollback(store, tenant, 2)
    store.commit_across = original  # type: ignore[method-assign]
    assert [c.key for c in caught.value.conflicts] == ["b/y"]
    state = await store.read_state(tenant)
    assert (state.namespaces["a"]["x"].value, state.namespaces["b"]["y"].value) == (2, 99)
    assert state.revision == 5


async def test_rollback_sees_a_nested_type_change(store: Store, tenant: str) -> None:
    from kvconf import timeline

    first = await store.set(tenant, "ns", "flags", [True])
    await store.set(tenant, "ns", "flags", [1])  # equal in Python, not in JSON
    results = await timeline.rollback(store, tenant, first.revision)
    assert len(results) == 1
    assert (await store.get(tenant, "ns", "flags")).value == [True]
