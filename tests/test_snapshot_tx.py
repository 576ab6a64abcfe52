"""Snapshot paths over dedicated connections: pipelined capture, restore transactions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.exceptions import TimeoutError as RedisTimeoutError

from kvconf import Settings, Store
from kvconf._redis.connect import _servers
from kvconf._redis.names import TenantKeys
from kvconf._redis.resp import command
from kvconf._snapshot import capture as capture_mod
from kvconf._snapshot import restore as restore_mod
from kvconf._snapshot.format import TenantDump
from kvconf.exceptions import Conflict, NotFound, Unavailable
from kvconf.snapshot import load_dump, restore, save

from .redis_server import RedisServer


def _race_restores(
    monkeypatch: pytest.MonkeyPatch, store: Store, tenant: str, times: int
) -> list[int]:
    """Write to ``tenant`` right after each of the first ``times`` WATCH reads of a
    restore transaction, before its MULTI/EXEC goes out; returns the revisions written."""
    real = restore_mod.read_replies
    written: list[int] = []

    async def racing(conn: Any, n: int, **kwargs: Any) -> list[Any]:
        replies = await real(conn, n, **kwargs)
        watch_round = n > 1 and replies[0] == b"OK" and replies[1] != b"QUEUED"
        if watch_round and len(written) < times:
            result = await store.set(tenant, "svc", "raced", len(written))
            written.append(result.revision)
        return replies

    monkeypatch.setattr(restore_mod, "read_replies", racing)
    return written


async def test_restore_retries_when_a_write_races_the_transaction(
    store: Store, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_many(tenant, "svc", {"a": 1, "b": 2})
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "svc", "a", 10)
    written = _race_restores(monkeypatch, store, tenant, times=1)

    report = await restore(store, info.path, safety_dir=tmp_path / "safety")
    monkeypatch.undo()
    (row,) = report.tenants
    assert len(written) == 1  # the first transaction was aborted by the write ...
    assert row.live_revision == written[0]  # ... and the retry read the raced revision
    assert row.revision == written[0] + 1
    assert await store.revision(tenant) == written[0] + 1
    state = await store.read_state(tenant)
    assert {k: e.value for k, e in state.namespaces["svc"].items()} == {"a": 1, "b": 2}
    with pytest.raises(NotFound):
        await store.history(tenant, "svc", "raced")
    events = await store.changes_since(tenant, written[0])
    assert [(e.type, e.revision) for e in events] == [("reset", written[0] + 1)]


async def test_restore_gives_up_on_a_tenant_that_keeps_changing_and_writes_nothing(
    store: Store, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_many(tenant, "svc", {"a": 1, "b": 2})
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "svc", "a", 10)
    written = _race_restores(monkeypatch, store, tenant, times=restore_mod.RESTORE_ATTEMPTS)

    with pytest.raises(Conflict, match="kept changing") as caught:
        await restore(store, info.path, safety_dir=tmp_path / "safety")
    monkeypatch.undo()
    assert caught.value.details["tenant"] == tenant
    assert len(written) == restore_mod.RESTORE_ATTEMPTS
    # only the racing writes happened: no restore, no reset event
    assert await store.revision(tenant) == written[-1]
    state = await store.read_state(tenant)
    values = {k: e.value for k, e in state.namespaces["svc"].items()}
    assert values == {"a": 10, "b": 2, "raced": restore_mod.RESTORE_ATTEMPTS - 1}
    assert [e.type for e in await store.changes_since(tenant, 0)] == ["change"] * (
        2 + restore_mod.RESTORE_ATTEMPTS
    )


async def test_capture_stream_rereads_a_tenant_whose_namespaces_grew(
    store: Store, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    others = [f"{tenant}-{i}" for i in range(3)]
    for t in [tenant, *others]:
        await store.set(t, "svc", "k", 1)
    real = capture_mod.read_replies
    calls = 0

    async def late_namespace(conn: Any, n: int, **kwargs: Any) -> list[Any]:
        nonlocal calls
        replies = await real(conn, n, **kwargs)
        calls += 1
        if calls == 1:  # the namespace sets were read; the transactions are not sent yet
            await store.set(tenant, "late", "k", 2)
        return replies

    monkeypatch.setattr(capture_mod, "read_replies", late_namespace)
    names = [*others, tenant]
    dumps = [d async for d in capture_mod.capture_stream(store.redis, names, window=2)]
    monkeypatch.undo()
    assert [d.tenant for d in dumps if d is not None] == names
    dump = dumps[-1]
    assert dump is not None
    assert dump.namespaces == ["late", "svc"]
    assert dump.values["late"][0] == b"k"
    assert dump.history["late"][0].startswith(b"k|0000000001|")
    assert dump.revision == await store.revision(tenant)
    for t, d in zip(names, dumps, strict=True):
        assert d == await capture_mod.capture(store.redis, t)


async def test_capture_stream_of_unknown_tenants_yields_none(store: Store, tenant: str) -> None:
    await store.set(tenant, "svc", "k", 1)
    names = [f"{tenant}-missing", tenant]
    dumps = [d async for d in capture_mod.capture_stream(store.redis, names)]
    assert dumps[0] is None
    assert dumps[1] is not None
    assert dumps[1].tenant == tenant


async def test_load_dump_writes_the_capture_exactly(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "svc", {"a": 1, "b": [2]})
    await store.delete(tenant, "svc", "b")
    await store.set(tenant, "_defaults", "t", 30)
    dump = await capture_mod.capture(store.redis, tenant)
    assert dump is not None
    await store.set(tenant, "extra", "x", 1)  # live-only state is dropped
    await load_dump(store, dump)
    assert await capture_mod.capture(store.redis, tenant) == dump
    assert await store.redis.exists(TenantKeys(tenant).ns("extra")) == 0


async def test_a_reply_that_never_comes_times_out_as_a_redis_error(
    redis_server: RedisServer,
) -> None:
    client = aredis.Redis.from_url(redis_server.url, socket_timeout=0.3)
    try:
        async with capture_mod.dedicated_connections(client, 1) as (conn,):
            await conn.send_packed_command(command("BLPOP", "kvconf:never", 5))
            with pytest.raises(RedisTimeoutError):
                await capture_mod.read_replies(conn, 1)
            assert not conn.is_connected  # a late reply can never be taken for another's
    finally:
        await client.aclose()


async def test_a_frozen_server_makes_save_unavailable(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    client = aredis.Redis.from_url(redis_server.url, socket_timeout=0.5)
    store = Store(client=client, settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set_many("frozen", "svc", {"a": 1})
        redis_server.pause()
        try:
            with pytest.raises(Unavailable):
                await asyncio.wait_for(save(store, tmp_path / "snaps", ["frozen"]), 10)
        finally:
            redis_server.resume()
        assert (await store.get("frozen", "svc", "a")).value == 1
        assert list((tmp_path / "snaps").glob("*")) == []  # not even a temporary file
    finally:
        await store.aclose()


async def test_load_dump_of_a_big_tenant_is_quick_on_fakeredis(tenant: str) -> None:
    # fakeredis parses one huge joined buffer of commands very slowly (11 s here)
    record = b'{"version":1,"revision":1,"updated_at":"t","updated_by":"a","value":%d}'
    keys = [b"k%d" % i for i in range(5000)]
    dump = TenantDump(
        tenant=tenant, revision=1, epoch="e", meta={"created_at": "t"}, namespaces=["ns"],
        schemas={}, values={"ns": [x for k in keys for x in (k, record % 1)]}, trash={},
        history={"ns": sorted(b"%s|0000000001|%s" % (k, record % 1) for k in keys)},
        log=[1, b'{"tenant":"%s"}' % tenant.encode()],
    )  # fmt: skip
    store = Store(settings=Settings(redis_url=f"memory://{tenant}"), environ={})
    try:
        started = time.perf_counter()
        await load_dump(store, dump)
        assert time.perf_counter() - started < 5
        assert await capture_mod.capture(store.redis, tenant) == dump
    finally:
        await store.aclose()
        _servers.pop(tenant, None)


async def test_save_refuses_a_tenant_with_a_foreign_key_and_leaves_no_file(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set(tenant, "svc", "a", 1)
    hist = TenantKeys(tenant).hist("svc")
    await store.redis.delete(hist)
    await store.redis.set(hist, "junk")  # an operator's mistake
    with pytest.raises(Unavailable, match="WRONGTYPE"):
        await save(store, tmp_path / "snaps", [tenant])
    assert list((tmp_path / "snaps").glob("*")) == []


async def test_no_answer_to_the_transaction_says_the_outcome_is_unknown(
    store: Store, tenant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_many(tenant, "svc", {"a": 1})
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "svc", "a", 2)
    real = restore_mod.read_replies

    async def lost_answer(conn: Any, n: int, **kw: Any) -> list[Any]:
        replies = await real(conn, n, **kw)
        if kw.get("errors", True) and n > 1:  # the MULTI ... EXEC replies
            raise RedisTimeoutError("no reply within 0.5 s")  # as if they came too late
        return replies

    monkeypatch.setattr(restore_mod, "read_replies", lost_answer)
    with pytest.raises(Unavailable, match="whole or not at all") as caught:
        await restore(store, info.path, safety_dir=tmp_path / "safety")
    monkeypatch.undo()
    assert caught.value.details["reason"] == "outcome_unknown"
    # here it was applied, whole: the revision the message names, the file's values
    assert f"revision {await store.revision(tenant)} means it was" in str(caught.value)
    assert (await store.get(tenant, "svc", "a")).value == 1
