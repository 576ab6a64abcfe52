"""Snapshots: round trip, restore modes, refusal of bad files, consistency."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kvconf import KeySpec, Schema, Store
from kvconf._codec import decode_event
from kvconf._redis.names import TENANTS_KEY, TenantKeys
from kvconf._snapshot.format import SnapshotReader
from kvconf.exceptions import (
    InvalidInput,
    NotFound,
    SnapshotCorrupt,
    SnapshotNotFound,
    SnapshotVersionUnsupported,
    TenantNotFound,
    Unavailable,
)
from kvconf.snapshot import list_snapshots, prune, restore, save, verify


async def _fill(store: Store, tenant: str) -> None:
    await store.create_tenant(tenant)
    await store.set_schema(tenant, "svc", Schema(keys={"port": KeySpec(type="int", min=1)}))
    await store.set_many(tenant, "svc", {"port": 80, "host": "a"}, actor="ops", reason="init")
    await store.set(tenant, "svc", "port", 81)
    await store.set_many(tenant, "_defaults", {"timeout": 30, "tags": ["x", {"y": None}]})
    await store.set(tenant, "svc", "gone", True)
    await store.delete(tenant, "svc", "gone", reason="cleanup")


async def _everything(store: Store, tenant: str) -> dict[str, object]:
    state = await store.read_state(tenant)
    hist = {}
    for ns in await store.namespaces(tenant):
        for key in ("port", "host", "gone", "timeout", "tags"):
            with contextlib.suppress(NotFound):
                hist[f"{ns}/{key}"] = await store.history(tenant, ns, key, limit=100)
    return {
        "values": state.namespaces,
        "history": hist,
        "schemas": await store.schemas(tenant),
        # raw: the core's ChangeEvent cannot decode "schema" events yet
        "log": [
            e
            for e in await store.redis.zrange(TenantKeys(tenant).log, 0, -1)
            if b'"reset"' not in e
        ],
    }


async def _wipe(store: Store, tenant: str) -> None:
    await store.delete_tenant(tenant, hard=True)
    assert not await store.exists(tenant)


async def test_round_trip_save_wipe_restore(store: Store, tenant: str, tmp_path: Path) -> None:
    await _fill(store, tenant)
    before = await _everything(store, tenant)
    rev = await store.revision(tenant)
    epoch = (await store.info(tenant)).epoch
    info = await save(store, tmp_path, [tenant])
    assert info.verified
    assert [t.tenant for t in info.tenants] == [tenant]
    assert info.tenants[0].revision == rev
    assert info.keys == 4
    assert stat.S_IMODE(os.stat(info.path).st_mode) == 0o600
    await _wipe(store, tenant)

    report = await restore(store, info.path, safety_dir=tmp_path / "safety")
    assert report.safety_snapshot is None  # nothing live was overwritten
    (row,) = report.tenants
    assert (row.tenant, row.revision, row.added) == (tenant, rev + 1, 4)
    assert await store.exists(tenant)
    assert tenant in await store.tenants()
    assert await _everything(store, tenant) == before
    assert await store.revision(tenant) == rev + 1
    assert (await store.info(tenant)).epoch not in ("", epoch)
    # writes continue normally after a restore: versions and revisions go on
    result = await store.set(tenant, "svc", "port", 82, expect_version=2)
    assert result.revision == rev + 2
    assert result.versions == {"port": 3}
    # the restored schema still applies
    with pytest.raises(InvalidInput):
        await store.set(tenant, "svc", "port", "not-an-int")


async def test_restore_over_live_moves_revision_forward_and_emits_reset(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await _fill(store, tenant)
    info = await save(store, tmp_path, [tenant])
    file_rev = info.tenants[0].revision
    for i in range(10):  # the live tenant runs ahead of the file
        await store.set(tenant, "svc", "extra", i)
    live_rev = await store.revision(tenant)
    pubsub = store.redis.pubsub()
    await pubsub.execute_command("SSUBSCRIBE", TenantKeys(tenant).changes_channel)

    report = await restore(store, info.path, safety_dir=tmp_path / "safety")
    (row,) = report.tenants
    assert row.live_revision == live_rev
    assert row.file_revision == file_rev
    assert row.revision == live_rev + 1
    assert row.removed == 1
    assert report.safety_snapshot is not None
    assert verify(report.safety_snapshot).tenants[0].revision == live_rev
    with pytest.raises(NotFound):
        await store.get(tenant, "svc", "extra")
    events = await store.changes_since(tenant, live_rev)
    assert [(e.type, e.revision) for e in events] == [("reset", live_rev + 1)]
    got = None
    for _ in range(50):
        msg = await pubsub.get_message(timeout=0.1)
        if msg and msg["type"] in ("smessage", "message"):
            got = decode_event(msg["data"])
            break
    await pubsub.aclose()
    assert got is not None
    assert got.type == "reset"
    assert got.revision == live_rev + 1


async def test_restore_as_new_tenant_and_merge(store: Store, tenant: str, tmp_path: Path) -> None:
    await _fill(store, tenant)
    info = await save(store, tmp_path, [tenant])
    copy = f"{tenant}-copy"
    report = await restore(store, info.path, as_tenant=copy)
    assert report.tenants[0].tenant == copy
    assert (await store.get(copy, "svc", "port")).value == 81
    events = await store.redis.zrange(TenantKeys(copy).log, 0, -1)
    assert {msgspec.json.decode(e)["tenant"] for e in events} == {copy}
    assert (await store.read_state(copy)).namespaces == (await store.read_state(tenant)).namespaces

    # merge: file keys come back as new versions, live-only keys stay
    await store.set(tenant, "svc", "port", 99)
    await store.set(tenant, "svc", "live_only", "keep")
    dry = await restore(store, info.path, mode="merge", dry_run=True)
    assert (dry.tenants[0].changed, dry.tenants[0].removed) == (1, 0)
    rev_before = await store.revision(tenant)
    assert await store.revision(tenant) == rev_before  # dry run wrote nothing
    await restore(store, info.path, mode="merge", safety_dir=tmp_path / "s")
    port = await store.get(tenant, "svc", "port")
    assert port.value == 81
    assert port.version == 4
    assert (await store.get(tenant, "svc", "live_only")).value == "keep"
    assert [v.value for v in await store.history(tenant, "svc", "port")][:2] == [81, 99]
    with pytest.raises(InvalidInput):
        await restore(store, info.path, as_tenant="x", tenants=[tenant, copy])
    with pytest.raises(NotFound):
        await restore(store, info.path, tenants=["nope"])


async def test_dry_run_reports_per_tenant_and_touches_nothing(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await _fill(store, tenant)
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "svc", "host", "b")
    await store.set(tenant, "svc", "new", 1)
    rev = await store.revision(tenant)
    report = await restore(store, info.path, dry_run=True)
    (row,) = report.tenants
    assert (row.added, row.changed, row.removed, row.unchanged) == (0, 1, 1, 3)
    assert row.revision == rev + 1
    assert report.dry_run
    assert report.safety_snapshot is None
    assert await store.revision(tenant) == rev
    assert list_snapshots(tmp_path) == [msgspec.structs.replace(info, verified=False)]


def _corrupt_variants(data: bytes) -> list[bytes]:
    out = [data[: len(data) // 2], data[:-1], data[:20], b"", data + b"x"]
    for at in (0, 17, 25, len(data) // 2, len(data) - 40, len(data) - 1):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        out.append(bytes(flipped))
    return out


async def test_flipped_bytes_and_truncation_are_refused_before_redis(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await _fill(store, tenant)
    info = await save(store, tmp_path, [tenant])
    data = Path(info.path).read_bytes()
    await store.set(tenant, "svc", "host", "live")
    rev = await store.revision(tenant)
    for i, bad in enumerate(_corrupt_variants(data)):
        path = tmp_path / f"bad-{i}.kvsnap"
        path.write_bytes(bad)
        with pytest.raises((SnapshotCorrupt, SnapshotVersionUnsupported)):
            verify(path)
        with pytest.raises((SnapshotCorrupt, SnapshotVersionUnsupported)):
            await restore(store, path, safety_dir=tmp_path / "safety")
    assert await store.revision(tenant) == rev
    assert (await store.get(tenant, "svc", "host")).value == "live"
    assert not (tmp_path / "safety").exists()
    with pytest.raises(SnapshotNotFound):
        verify(tmp_path / "missing.kvsnap")


def test_unsupported_format_version(tmp_path: Path) -> None:
    path = tmp_path / "future.kvsnap"
    path.write_bytes(b"KVCONF-SNAPSHOT\n" + (99).to_bytes(4, "big") + b"\0" * 64)
    with pytest.raises(SnapshotVersionUnsupported) as info:
        verify(path)
    assert info.value.details["version"] == 99


async def test_save_unknown_tenant_is_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(TenantNotFound):
        await save(store, tmp_path, ["no-such-tenant-xyz"])
    assert list(tmp_path.iterdir()) == []


async def test_snapshot_under_concurrent_writers_is_one_revision_per_tenant(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    tenants = [f"{tenant}-{i}" for i in range(3)]
    for t in tenants:
        await store.set_many(t, "ns", {f"k{j}": 0 for j in range(20)})
    stop = asyncio.Event()

    async def writer(t: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            # each change set writes every key with the same counter
            await store.set_many(t, "ns", {f"k{j}": n for j in range(20)})
            if n % 3 == 0:
                await store.set(t, f"ns{n % 5}", "x", n)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(writer(t)) for t in tenants]
    infos = []
    for _ in range(4):
        await asyncio.sleep(0.02)
        infos.append(await save(store, tmp_path, tenants))
    stop.set()
    await asyncio.gather(*tasks)
    for info in infos:
        with SnapshotReader(Path(info.path)) as reader:
            for dump in reader.dumps():
                entries = {}
                for ns, flat in dump.values.items():
                    for k, v in zip(flat[::2], flat[1::2], strict=True):
                        entries[(ns, k)] = msgspec.json.decode(v)
                main = [e for (ns, _), e in entries.items() if ns == "ns"]
                assert len({e["value"] for e in main}) == 1  # one change set, whole
                assert max(e["revision"] for e in entries.values()) == dump.revision
                assert int(dump.log[-2]) == dump.revision  # log ends at the same revision
                newest: dict[tuple[str, bytes], dict[str, int]] = {}
                for ns, members in dump.history.items():
                    assert members == sorted(members)  # the zset's order
                    for member in members:
                        key, version, record = member.split(b"|", 2)
                        decoded = msgspec.json.decode(record)
                        assert int(version) == decoded["version"]
                        assert decoded["revision"] <= dump.revision
                        newest[(ns, key)] = decoded  # members of a key: oldest first
                assert newest.keys() >= entries.keys()
                for where, entry in entries.items():
                    assert newest[where]["version"] == entry["version"]


async def test_prune_keeps_newest(store: Store, tenant: str, tmp_path: Path) -> None:
    await store.set(tenant, "ns", "k", 1)
    paths = [(await save(store, tmp_path, [tenant], label="scheduled")).path for _ in range(4)]
    deleted = prune(tmp_path, 2)
    assert [str(p) for p in deleted] == paths[:2]
    assert [i.path for i in list_snapshots(tmp_path)] == paths[2:]


async def test_tenants_key_holds_restored(store: Store, tenant: str, tmp_path: Path) -> None:
    await store.set(tenant, "ns", "k", 1)
    # Only this tenant: the shared server also holds other tests' deliberately corrupt ones.
    info = await save(store, tmp_path, [tenant])
    assert tenant in [t.tenant for t in info.tenants]
    await store.redis.srem(TENANTS_KEY, tenant)
    await restore(store, info.path, tenants=[tenant], safety_dir=tmp_path / "s")
    assert tenant in await store.tenants()


async def test_foreign_bytes_round_trip(store: Store, tenant: str, tmp_path: Path) -> None:
    await store.set(tenant, "ns", "k", 1)
    tk = TenantKeys(tenant)
    raw = b'{"version":1,"revision":1,"updated_at":"2026-01-01T00:00:00Z","updated_by":"op",'
    raw += b'"value":"nul\x00byte:12:x"}'
    await store.redis.hset(tk.ns("ns"), "raw", raw)  # an operator's edit outside kvconf
    info = await save(store, tmp_path, [tenant])
    await store.delete_tenant(tenant, hard=True)
    await restore(store, info.path)
    assert await store.redis.hget(tk.ns("ns"), "raw") == raw
    assert (await store.get(tenant, "ns", "k")).value == 1


async def test_restore_over_soft_deleted_keeps_it_in_the_safety_snapshot(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set(tenant, "ns", "k", "old")
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "ns", "k", "hidden")
    await store.delete_tenant(tenant)  # soft: values hidden, still there
    report = await restore(store, info.path, safety_dir=tmp_path / "s")
    assert report.safety_snapshot is not None
    (held,) = verify(report.safety_snapshot).tenants
    assert held.tenant == tenant
    assert held.deleted
    assert (await store.get(tenant, "ns", "k")).value == "old"
    # restoring the safety snapshot brings the soft-deleted tenant back, undeleted
    await restore(store, report.safety_snapshot, safety_dir=tmp_path / "s")
    assert (await store.get(tenant, "ns", "k")).value == "hidden"


async def test_capture_reads_deleted_keys_history_without_scan(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    from kvconf._snapshot.capture import capture

    await store.set(tenant, "a", "single", 1)
    await store.delete(tenant, "a", "single")
    await store.commit_across(tenant, {"a": {"x": 1}, "b": {"y": 2}})
    await store.commit_across(tenant, {}, deletes={"a": ["x"], "b": ["y"]})
    # one script, no SCAN: the namespaces' history zsets hold tombstoned keys too
    dump = await capture(store.redis, tenant)
    assert dump is not None
    assert dump.values == {}
    keys = {(ns, m.split(b"|", 1)[0]) for ns, members in dump.history.items() for m in members}
    assert keys == {("a", b"single"), ("a", b"x"), ("b", b"y")}
    assert dump.versions == 6  # each key: written, then deleted
    # and a restore brings the tombstones' history back
    info = await save(store, tmp_path, [tenant])
    await _wipe(store, tenant)
    await restore(store, info.path)
    assert [v.deleted for v in await store.history(tenant, "a", "x")] == [True, False]
    assert [v.deleted for v in await store.history(tenant, "b", "y")] == [True, False]


async def test_restore_replace_removes_live_only_history(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set(tenant, "ns", "k", 1)
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "ns", "k", 2)
    await store.set(tenant, "other", "later", 1)
    await store.delete(tenant, "other", "later")
    await restore(store, info.path, safety_dir=tmp_path / "s")
    tk = TenantKeys(tenant)
    assert [v.value for v in await store.history(tenant, "ns", "k")] == [1]
    assert not await store.redis.exists(tk.hist("other"))
    assert await store.namespaces(tenant) == ["ns"]
    # versions continue from the restored history
    assert (await store.set(tenant, "ns", "k", 3)).versions == {"k": 2}


def test_version_1_file_is_read_with_its_history_converted(tmp_path: Path) -> None:
    from kvconf._snapshot import format as fmt

    rec1 = b'{"version":1,"revision":1,"updated_at":"t","updated_by":"a","deleted":false,'
    rec1 += b'"reason":"","value":1}'
    rec2 = rec1.replace(b'"version":1', b'"version":2').replace(b'"revision":1', b'"revision":2')
    dump = fmt.TenantDump(
        tenant="old", revision=2, epoch="e", meta={"created_at": "t"}, namespaces=["ns"],
        schemas={}, values={"ns": [b"k", rec2]}, trash={},
        history={"ns:k": [rec1, rec2], "ns:gone": [rec1]}, log=[],
    )  # fmt: skip
    path = tmp_path / "v1.kvsnap"
    _write_format_1(path, dump)
    info = verify(path)
    assert (info.format, info.keys, info.versions) == (1, 1, 3)
    with SnapshotReader(path) as reader:
        (got,) = reader.dumps()
    assert got.history == {
        "ns": [b"gone|0000000001|" + rec1, b"k|0000000001|" + rec1, b"k|0000000002|" + rec2]
    }


async def test_version_1_file_restores(store: Store, tenant: str, tmp_path: Path) -> None:

    await store.set(tenant, "ns", "k", 1)
    await store.set(tenant, "ns", "k", 2)
    info = await save(store, tmp_path, [tenant])
    with SnapshotReader(Path(info.path)) as reader:
        (dump,) = reader.dumps()
    # the same tenant as a kvconf with per-key history would have saved it
    dump.history = {"ns:k": [m.split(b"|", 2)[2] for m in dump.history["ns"]]}
    path = tmp_path / "v1.kvsnap"
    _write_format_1(path, dump)
    await _wipe(store, tenant)
    await restore(store, path)
    assert [v.value for v in await store.history(tenant, "ns", "k")] == [2, 1]
    assert (await store.set(tenant, "ns", "k", 3)).versions == {"k": 3}


async def test_capture_by_script_reads_the_same_as_the_transaction(
    store: Store, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvconf._redis.scripts import Scripts
    from kvconf._snapshot import capture as _snapshot_capture

    await _fill(store, tenant)
    await store.commit_across(tenant, {"a": {"x": 1}}, deletes={"svc": ["host"]})
    by_tx = await _snapshot_capture.capture(store.redis, tenant)
    by_script = await _snapshot_capture.capture_by_script(Scripts(store.redis), tenant)
    assert by_tx is not None
    assert by_tx == by_script
    assert by_tx.history["a"][0].startswith(b"x|0000000001|")

    # a namespace created between reading the namespace set and the transaction
    # is not missed: the tenant is read again by the script
    real = store.redis.smembers

    async def stale_smembers(key: str) -> set[bytes]:
        found: set[bytes] = await real(key)
        await store.set(tenant, "late", "k", 1)
        return found

    monkeypatch.setattr(store.redis, "smembers", stale_smembers)
    dump = await _snapshot_capture.capture(store.redis, tenant)
    monkeypatch.undo()
    assert dump is not None
    assert "late" in dump.namespaces
    assert dump.values["late"][0] == b"k"
    assert dump.history["late"][0].startswith(b"k|0000000001|")
    assert dump.revision == await store.revision(tenant)


async def test_restore_many_tenants_reports_each_in_file_order(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    tenants = [f"{tenant}-{i}" for i in range(5)]
    for i, t in enumerate(tenants):
        await store.set_many(t, "ns", {f"k{j}": i for j in range(i + 1)})
    info = await save(store, tmp_path, tenants)
    for t in tenants:
        await _wipe(store, t)
    report = await restore(store, info.path)
    expected = [(t, i + 1) for i, t in enumerate(tenants)]
    assert [(r.tenant, r.added) for r in report.tenants] == expected
    for i, t in enumerate(tenants):
        assert (await store.get(t, "ns", f"k{i}")).value == i
        assert t in await store.tenants()


async def test_restore_refuses_a_foreign_key_before_touching_the_tenant(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set(tenant, "svc", "a", 1)
    await store.set(tenant, "x", "b", 1)
    info = await save(store, tmp_path, [tenant])
    await store.set(tenant, "svc", "a", 2)
    # An operator's edit: namespace "x" forgotten, its hash replaced by a string.
    tk = TenantKeys(tenant)
    await store.redis.srem(tk.namespaces, "x")
    await store.redis.delete(tk.ns("x"))
    await store.redis.set(tk.ns("x"), "junk")
    before = await store.read_state(tenant)
    history = await store.history(tenant, "svc", "a")
    with pytest.raises(Unavailable):
        await restore(store, Path(info.path), tenants=[tenant], mode="replace")
    assert await store.read_state(tenant) == before
    assert await store.history(tenant, "svc", "a") == history


def _write_format_1(path: Path, dump: Any) -> None:
    """Write ``dump`` as a format-1 file, as a kvconf with per-key history did."""
    from kvconf._snapshot import format as fmt

    saved = fmt.FORMAT_VERSION
    fmt.FORMAT_VERSION = 1
    try:
        with fmt.SnapshotWriter(path) as writer:
            writer.add(dump)
            writer.finish()
    finally:
        fmt.FORMAT_VERSION = saved
