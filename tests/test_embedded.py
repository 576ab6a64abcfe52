"""Embedded durability: the data dir survives restarts and kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from kvconf import KeySpec, Schema, Settings, Store, snapshot
from kvconf._snapshot.background import background_services
from kvconf._snapshot.embedded import close_embedded, open_embedded_store, persister_of
from kvconf._snapshot.journal import JournalWriter, journal_generations, read_journal
from kvconf.exceptions import JournalCorrupt, KvconfError, TenantNotFound, Unavailable
from kvconf.snapshot import list_snapshots, verify

from .redis_server import free_port

# subprocesses run this checkout's kvconf, not whichever one is installed
ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")} | {
    "PYTHONPATH": str(ROOT)
}


@pytest.fixture
async def opener(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Open the test's data dir as a fresh process would (own server each time)."""
    data_dir = tmp_path / "data"
    stores: list[Store] = []

    async def open_(**overrides: object) -> Store:
        await close_all()
        settings = Settings(data_dir=data_dir, **overrides)  # type: ignore[arg-type]
        store = await open_embedded_store(settings, server_name=f"t-{uuid.uuid4().hex}")
        stores.append(store)
        return store

    async def close_all() -> None:
        for store in stores:
            await store.aclose()
        stores.clear()
        await close_embedded(data_dir)

    yield open_
    await close_all()


async def test_concurrent_writes_survive_reopen(opener: Callable[..., object], tenant: str) -> None:
    # Concurrent writers share round trips on a server; every one of them
    # must still be marked for the data dir.
    store = await opener()  # type: ignore[misc]
    await asyncio.gather(*(store.set(tenant, "svc", f"k{i}", i) for i in range(40)))
    await asyncio.gather(*(store.set(f"{tenant}-{i}", "svc", "k", i) for i in range(10)))
    before = await store.read_state(tenant)
    assert len(before.namespaces["svc"]) == 40

    store = await opener()  # type: ignore[misc]
    assert await store.read_state(tenant) == before
    for i in range(10):
        assert (await store.get(f"{tenant}-{i}", "svc", "k")).value == i


async def test_a_restore_survives_reopen(
    opener: Callable[..., object], tenant: str, tmp_path: Path
) -> None:
    store = await opener()  # type: ignore[misc]
    await store.set(tenant, "svc", "port", 80)
    saved = await snapshot.save(store, directory=tmp_path / "snaps")
    await store.set(tenant, "svc", "port", 81)
    await snapshot.restore(store, saved.path)
    restored = await store.read_state(tenant)
    assert restored.namespaces["svc"]["port"].value == 80

    store = await opener()  # type: ignore[misc]
    assert await store.read_state(tenant) == restored


async def test_state_survives_reopen(opener: Callable[..., object], tenant: str) -> None:
    store = await opener()  # type: ignore[misc]
    await store.create_tenant(tenant)
    await store.set_schema(tenant, "svc", Schema(keys={"port": KeySpec(type="int")}))
    await store.set(tenant, "svc", "port", 80)
    await store.set(tenant, "svc", "port", 81, reason="bump")
    await store.set(tenant, "svc", "tmp", 1)
    await store.delete(tenant, "svc", "tmp")
    await store.set("gone", "ns", "k", 1)
    await store.delete_tenant("gone", hard=True)
    await store.set("soft", "ns", "k", 1)
    await store.delete_tenant("soft")
    await store.redis.hset("kvconf:tokens", "abc", "token-record")
    before = await store.read_state(tenant)

    store = await opener()  # type: ignore[misc]
    assert await store.read_state(tenant) == before
    assert [v.value for v in await store.history(tenant, "svc", "port")] == [81, 80]
    assert [v.deleted for v in await store.history(tenant, "svc", "tmp")] == [True, False]
    assert (await store.schemas(tenant))["svc"].keys["port"].type == "int"
    assert await store.tenants() == [tenant]
    with pytest.raises(TenantNotFound):
        await store.revision("gone")
    await store.undelete_tenant("soft")
    assert (await store.get("soft", "ns", "k")).value == 1
    assert await store.redis.hget("kvconf:tokens", "abc") == b"token-record"
    # writes after a restart continue the revision and version sequences
    result = await store.set(tenant, "svc", "port", 82)
    assert result.versions == {"port": 3}
    assert result.revision == before.revision + 1


async def test_journal_compacts_and_torn_tail_is_dropped(
    opener: Callable[..., object], tenant: str, tmp_path: Path
) -> None:
    store = await opener()  # type: ignore[misc]
    persister = persister_of(store)
    assert persister is not None
    persister.compact_at = 2000  # force compaction quickly
    for i in range(30):
        await store.set(tenant, "ns", f"k{i % 5}", "x" * 50 + str(i))
    data_dir = tmp_path / "data"
    assert journal_generations(data_dir)[0] > 1  # compacted at least once
    state = await store.read_state(tenant)
    await opener()  # type: ignore[misc]
    journal = data_dir / f"journal-{journal_generations(data_dir)[-1]:08d}.log"
    with open(journal, "ab") as fh:
        fh.write(b"\x00\x00\x10\x00torn record")
    store = await opener()  # type: ignore[misc]
    assert await store.read_state(tenant) == state
    await store.set(tenant, "ns", "after", 1)  # appends after the dropped tail
    store = await opener()  # type: ignore[misc]
    assert (await store.get(tenant, "ns", "after")).value == 1


async def test_journal_record_with_per_key_history_is_replayed(
    opener: Callable[..., object], tenant: str, tmp_path: Path
) -> None:
    """A journal appended by a kvconf with per-key history zsets still replays."""
    from kvconf._snapshot.format import TenantDump
    from kvconf._snapshot.journal import JournalRecord

    store = await opener()  # type: ignore[misc]
    await store.set(tenant, "ns", "k", 1)
    data_dir = tmp_path / "data"
    await opener()  # type: ignore[misc]
    head = b'"updated_at":"2026-01-01T00:00:00Z","updated_by":"op","deleted":false,"reason":""'
    rec = [b'{"version":%d,"revision":%d,%s,"value":%d}' % (v, v, head, v) for v in (1, 2)]
    old = TenantDump(
        tenant="legacy", revision=3, epoch="e1", meta={"created_at": "2026-01-01T00:00:00Z"},
        namespaces=["ns"], schemas={}, values={"ns": [b"k", rec[1]]}, trash={},
        history={"ns:k": rec, "ns:gone": [rec[0]]},
        log=[],
    )  # fmt: skip
    journal = data_dir / f"journal-{journal_generations(data_dir)[-1]:08d}.log"
    writer = JournalWriter(journal)
    writer.append([JournalRecord(tenant="legacy", dump=old)])
    writer.close()
    store = await opener()  # type: ignore[misc]
    assert [v.value for v in await store.history("legacy", "ns", "k")] == [2, 1]
    assert [v.version for v in await store.history("legacy", "ns", "gone")] == [1]
    assert (await store.set("legacy", "ns", "k", 3)).versions == {"k": 3}
    assert (await store.get(tenant, "ns", "k")).value == 1


async def test_writes_are_journaled_as_deltas_that_replay_exactly(
    opener: Callable[..., object], tenant: str, tmp_path: Path
) -> None:
    """A big tenant's flushes journal the changed keys only; replay rebuilds it exactly."""
    import random

    from kvconf._snapshot.capture import capture
    from kvconf._snapshot.journal import read_journal

    store = await opener(history_limit=3, log_limit=20)  # type: ignore[misc]
    for at in (0, 1000):
        await store.set_many(tenant, "big", {f"k{i}": "x" * 500 for i in range(at, at + 1000)})
    await store.set(f"{tenant}-other", "ns", "k", 1)
    store = await opener(history_limit=3, log_limit=20)  # type: ignore[misc]  # in the base
    persister = persister_of(store)
    assert persister is not None
    persister.sync = False  # as under `kvconf serve`: flushed in batches
    data_dir = tmp_path / "data"
    journal = data_dir / f"journal-{journal_generations(data_dir)[-1]:08d}.log"
    start = journal.stat().st_size
    earlier = len(read_journal(journal)[0])  # the first session's, whole
    rng = random.Random(7)
    for step in range(120):
        key = f"k{rng.randrange(10)}"
        roll = rng.random()
        if roll < 0.6:
            await store.set(tenant, "big", key, step)
        elif roll < 0.75:
            with contextlib.suppress(KvconfError):  # deleting a missing key is refused
                await store.delete(tenant, rng.choice(["big", "small"]), key)
        else:  # across namespaces, new ones too; a refused one changes nothing
            deletes = {f"small{step % 3}": [key]} if roll > 0.9 else None
            with contextlib.suppress(KvconfError):
                await store.commit_across(
                    tenant, {"big": {key: step}, f"new{step % 3}": {key: [step]}}, deletes=deletes
                )
        if step % 7 == 0:
            await persister.flush()
    await persister.flush()
    records = read_journal(journal)[0][earlier:]
    assert records
    assert [r.tenant for r in records if r.delta is None] == []
    # each flush wrote a few keys, never the 2,000 keys of 500 bytes (1 MB)
    assert journal.stat().st_size - start < 400_000
    before = await capture(store.redis, tenant)
    other = await capture(store.redis, f"{tenant}-other")
    tenants = await store.tenants()

    store = await opener(history_limit=3, log_limit=20)  # type: ignore[misc]
    after = await capture(store.redis, tenant)
    assert before is not None
    assert after is not None
    for field in before.__struct_fields__:
        mine, theirs = getattr(after, field), getattr(before, field)
        if field in ("values", "trash"):  # hash fields come in insertion order
            mine, theirs = ({ns: dict(zip(f[::2], f[1::2], strict=True)) for ns, f in d.items()}
                            for d in (mine, theirs))  # fmt: skip
        assert mine == theirs, field
    assert await capture(store.redis, f"{tenant}-other") == other
    assert await store.tenants() == tenants
    result = await store.set(tenant, "big", "k0", "after")
    assert result.revision == before.revision + 1


def _record_offsets(journal: Path) -> list[int]:
    """Byte offset of each record (``u32 length + sha256 + payload``)."""
    data, at, out = journal.read_bytes(), 0, []
    while at < len(data):
        out.append(at)
        at += 36 + int.from_bytes(data[at : at + 4], "big")
    return out


def _offset_of(journal: Path, tenant: str) -> int:
    """Byte offset of the last record of ``tenant``."""
    records = read_journal(journal)[0]
    offsets = _record_offsets(journal)
    return max(at for at, r in zip(offsets, records, strict=True) if r.tenant == tenant)


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x40
    path.write_bytes(bytes(data))


async def test_a_damaged_journal_record_refuses_to_start_until_recovered(
    opener: Callable[..., object], tmp_path: Path
) -> None:
    """Damage before whole records is refused (naming file and byte), never dropped silently."""
    store = await opener()  # type: ignore[misc]
    for n in (1, 2, 3, 4):
        await store.set(f"t{n}", "ns", "k", n)
    data_dir = tmp_path / "data"
    await opener()  # type: ignore[misc]
    await close_embedded(data_dir)
    journal = data_dir / f"journal-{journal_generations(data_dir)[-1]:08d}.log"
    damaged = _offset_of(journal, "t2")
    _flip(journal, damaged + 36 + 20)  # inside t2's record's payload
    with pytest.raises(JournalCorrupt) as refused:
        await opener()  # type: ignore[misc]
    assert refused.value.details["path"] == str(journal)
    assert refused.value.details["offset"] == damaged
    assert refused.value.details["tenants"] == ["t3", "t4"]
    assert f"byte {damaged}" in str(refused.value)
    assert journal.exists()  # nothing touched

    store = await open_embedded_store(
        Settings(data_dir=data_dir), server_name=f"t-{uuid.uuid4().hex}", recover_journal=True
    )
    persister = persister_of(store)
    assert persister is not None
    (recovery,) = persister.recovered
    assert (recovery.offset, recovery.tenants) == (damaged, ["t3", "t4"])
    assert recovery.lost >= 2
    aside = Path(recovery.kept_as)
    assert aside.name.startswith(f"{journal.name}.damaged-")
    assert aside.read_bytes()[damaged:] != b""
    assert await store.tenants() == ["t1"]
    await store.aclose()
    await close_embedded(data_dir)
    store = await opener()  # type: ignore[misc]  # a normal start again
    assert (await store.get("t1", "ns", "k")).value == 1
    assert await store.tenants() == ["t1"]


def _home_env(data_dir: Path) -> dict[str, str]:
    """Point the default data dir (``~/.kvconf``) at ``data_dir``."""
    assert data_dir.name == ".kvconf"
    return {**ENV, "HOME": str(data_dir.parent)}


def _kvconf(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = _home_env(data_dir)
    return subprocess.run(
        ["kvconf", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_cli_writes_are_durable_and_a_served_dir_goes_through_its_server(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".kvconf"
    assert _kvconf(data_dir, "set", "acme", "ai-1", "timeout:=30").returncode == 0
    assert _kvconf(data_dir, "set", "acme", "ai-1", "timeout:=31").returncode == 0
    got = _kvconf(data_dir, "get", "acme", "ai-1", "timeout", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == 31
    assert json.loads(got.stdout)["version"] == 2

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)], stdout=subprocess.PIPE, env=ENV
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"holding"
        # The lock names the holder's URL: the CLI goes there (nothing listens on :9).
        routed = _kvconf(data_dir, "get", "acme", "ai-1")
        assert routed.returncode == 6
        message = " ".join(routed.stderr.split())
        assert "kvconf server http://127.0.0.1:9" in message
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]


HOLDER = """
import asyncio, sys
from pathlib import Path
from kvconf import Settings
from kvconf._snapshot.background import background_services
from kvconf._snapshot.embedded import open_embedded_store

async def main():
    settings = Settings(data_dir=Path(sys.argv[1]), port=9)
    store = await open_embedded_store(settings)
    async with background_services(store, settings):
        print("holding", flush=True)
        await asyncio.sleep(60)

asyncio.run(main())
"""

WRITER = """
import asyncio, sys, time
from pathlib import Path
from kvconf import Settings
from kvconf._snapshot.background import background_services
from kvconf._snapshot.embedded import open_embedded_store

async def main():
    settings = Settings(data_dir=Path(sys.argv[1]), fsync_writes=sys.argv[2] == "1")
    store = await open_embedded_store(settings)
    async with background_services(store, settings):
        i = 0
        while True:
            i += 1
            await store.set("acme", f"ns{i % 3}", f"k{i}", i)
            print(i, time.monotonic(), flush=True)
            await asyncio.sleep(0.002)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.parametrize("fsync_writes", [False, True])
async def test_kill_9_loses_nothing_older_than_the_window(
    tmp_path: Path, fsync_writes: bool
) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(data_dir), "1" if fsync_writes else "0"],
        stdout=subprocess.PIPE, env=ENV, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    acked: list[tuple[int, float]] = []
    first = proc.stdout.readline().split()
    acked.append((int(first[0]), float(first[1])))
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        n, at = line.split()
        acked.append((int(n), float(at)))
    proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait()
    proc.stdout.close()
    assert len(acked) > 5, acked  # fsync per write is slow on a loaded machine

    store = await open_embedded_store(
        Settings(data_dir=data_dir), server_name=f"t-{uuid.uuid4().hex}"
    )
    try:
        present = set()
        for ns in ("ns0", "ns1", "ns2"):
            present |= {int(k[1:]) for k in await store.get_namespace("acme", ns)}
    finally:
        await store.aclose()
        await close_embedded(data_dir)
    window = 0.0 if fsync_writes else 1.0
    must = {n for n, at in acked if at < killed_at - window}
    assert must
    assert must <= present, sorted(must - present)
    if fsync_writes:
        assert {n for n, _ in acked} <= present


def _wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "kvconf serve exited"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("kvconf serve did not come up")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[], tuple[str, subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []
    port = free_port()

    def start() -> tuple[str, subprocess.Popen[bytes]]:
        env = _home_env(tmp_path / ".kvconf")
        proc = subprocess.Popen(
            ["kvconf", "serve", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/healthz", proc)
        return base, proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_serve_kill_9_restart_keeps_acknowledged_http_writes(
    serve: Callable[[], tuple[str, subprocess.Popen[bytes]]],
) -> None:
    base, proc = serve()
    for i in range(5):
        r = httpx.put(f"{base}/api/v1/config/12/key{i}", json={"config_value": str(480 + i)})
        assert r.status_code == 200, r.text
    time.sleep(1.0)  # the documented window
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    base, _ = serve()
    for i in range(5):
        r = httpx.get(f"{base}/api/v1/config/12/key{i}")
        assert r.status_code == 200, r.text
        assert r.json()["config_value"] == str(480 + i)


async def test_redis_backed_store_has_no_persister() -> None:
    store = Store("memory://no-persister")
    assert persister_of(store) is None
    await store.aclose()


async def test_scheduled_snapshots_with_retention(tmp_path: Path, tenant: str) -> None:
    settings = Settings(
        redis_url=f"memory://sched-{uuid.uuid4().hex}", data_dir=tmp_path,
        snapshot_every=0.1, snapshot_keep=2,
    )  # fmt: skip
    store = Store(settings=settings)
    await store.set(tenant, "ns", "k", 1)
    try:
        async with background_services(store, settings):
            for _ in range(100):
                await asyncio.sleep(0.05)
                if len(list_snapshots(tmp_path / "snapshots")) >= 2:
                    await asyncio.sleep(0.3)
                    break
    finally:
        await store.aclose()
    found = list_snapshots(tmp_path / "snapshots")
    assert len(found) == 2
    assert all(i.label == "scheduled" for i in found)
    assert verify(found[-1].path).tenants[0].tenant == tenant


async def test_full_disk_is_unavailable_and_retried(
    opener: Callable[..., object], tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await opener()  # type: ignore[misc]
    await store.set(tenant, "ns", "a", 1)

    def full(self: object, records: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JournalWriter, "append", full)
    with pytest.raises(Unavailable, match="could not be made durable"):
        await store.set(tenant, "ns", "b", 2)
    monkeypatch.undo()
    await store.set(tenant, "ns", "c", 3)  # the failed tenant is flushed again too
    store = await opener()  # type: ignore[misc]
    got = {k: e.value for k, e in (await store.get_namespace(tenant, "ns")).items()}
    assert got == {"a": 1, "b": 2, "c": 3}


@pytest.mark.slow
def test_kill_9_window_holds_for_a_large_tenant(tmp_path: Path) -> None:
    """`kvconf serve` with one tenant of 8,000 keys of 1 KB loses nothing acked > 1 s before."""
    from .durability_window import measure

    window = measure(8000, seconds=2.5, writers=2, workdir=tmp_path)
    assert window.acked > 20, window
    assert window.oldest_lost_age < 1.0, window


@pytest.mark.slow
def test_cli_refuses_a_damaged_journal_recovers_and_drops_a_torn_tail(tmp_path: Path) -> None:
    """Fault test through the CLI: a corrupt middle record, then a torn tail."""
    home = tmp_path / ".kvconf"
    for n in (1, 2, 3, 4):
        assert _kvconf(home, "set", f"t{n}", "ns", f"k:={n}").returncode == 0
    journal = home / f"journal-{journal_generations(home)[-1]:08d}.log"
    damaged = _offset_of(journal, "t2")
    _flip(journal, damaged + 40)
    refused = _kvconf(home, "get", "t1", "ns", "k")
    assert refused.returncode == 7, refused.stderr
    message = "".join(refused.stderr.split())  # the console wraps long lines
    assert str(journal) in message
    assert f"damagedatbyte{damaged}," in message
    recovered = _kvconf(home, "snapshot", "recover", "--json")
    assert recovered.returncode == 0, recovered.stderr
    (report,) = json.loads(recovered.stdout)
    assert report["tenants"] == ["t3", "t4"]
    assert Path(report["kept_as"]).exists()
    assert json.loads(_kvconf(home, "get", "t1", "ns", "k", "--json").stdout)["value"] == 1
    # a torn tail (a crash mid-append) is dropped without a word
    assert _kvconf(home, "set", "t5", "ns", "k:=5").returncode == 0
    journal = home / f"journal-{journal_generations(home)[-1]:08d}.log"
    with open(journal, "ab") as fh:
        fh.write(b"\x00\x00\x10\x00" + b"\x07" * 40)
    got = _kvconf(home, "get", "t5", "ns", "k", "--json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["value"] == 5


async def test_hard_delete_audit_survives_reopen(opener: Callable[..., object]) -> None:
    from kvconf._redis.names import AUDIT_KEY

    store = await opener()  # type: ignore[misc]
    await store.set("doomed", "ns", "k", 1)
    await store.delete_tenant("doomed", hard=True, actor="ops", reason="cleanup")
    before = await store.redis.lrange(AUDIT_KEY, 0, -1)
    assert len(before) == 1
    store = await opener()  # type: ignore[misc]
    assert await store.redis.lrange(AUDIT_KEY, 0, -1) == before


async def test_a_write_landing_during_a_flush_is_never_half_journaled(
    opener: Callable[..., object],
) -> None:
    """A delta whose log names a key it does not carry would replay half a write."""
    store = await opener()  # type: ignore[misc]
    persister = persister_of(store)
    assert persister is not None
    persister.sync = False
    await store.set("acme", "app", "a", 1)
    await persister.flush()
    await store.set("acme", "app", "a", 2)
    keys, persister.dirty_keys = persister.dirty_keys, {}  # what a flush takes first
    await store.set("acme", "app", "b", "new")  # lands before the flush reads
    record = await persister._delta_record(persister._bind(), "acme", keys["acme"], {})
    assert record.delta is None  # captured whole instead
    assert record.dump is not None
    assert record.dump.revision == 3
    persister.dirty_keys, persister.dirty_tenants = {}, set()
    assert persister.journal is not None
    persister.journal.append([record])  # durable; then a crash before the next flush
    store = await opener()  # type: ignore[misc]
    values = {k: e.value for k, e in (await store.get_namespace("acme", "app")).items()}
    assert values == {"a": 2, "b": "new"}


async def test_a_failed_append_is_cut_off_and_later_writes_survive(
    opener: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC midway through an append must not leave bytes before later records."""
    import errno

    from kvconf._snapshot import journal as journal_mod

    store = await opener()  # type: ignore[misc]
    await store.set("acme", "app", "a", 1)
    real_write = os.write
    failing = [True]

    def write(fd: int, data: bytes) -> int:
        if failing[0]:
            failing[0] = False
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(journal_mod.os, "write", write)
    with pytest.raises(KvconfError):
        await store.set("acme", "app", "a", 2)
    acked = await store.set("acme", "app", "b", "acknowledged")  # space again
    monkeypatch.undo()
    store = await opener()  # type: ignore[misc]
    entries = await store.get_namespace("acme", "app")
    assert entries["b"].value == "acknowledged"
    assert await store.revision("acme") == acked.revision


async def test_embedded_writes_wait_for_a_slow_fsync_without_a_timeout(
    opener: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write timeout is for a frozen server, not the embedded journal's fsync."""
    from kvconf._snapshot.journal import JournalWriter

    store = await opener(write_timeout=0.2)  # type: ignore[misc]
    await store.set("acme", "app", "a", 0)
    append = JournalWriter.append
    active, most = [0], [0]

    def slow(self: JournalWriter, records: list[object]) -> None:
        active[0] += 1
        most[0] = max(most[0], active[0])
        time.sleep(0.5)
        try:
            append(self, records)  # type: ignore[arg-type]
        finally:
            active[0] -= 1

    monkeypatch.setattr(JournalWriter, "append", slow)
    first = await store.set("acme", "app", "a", 1)
    second = await store.set("acme", "app", "a", 2)
    assert (first.revision, second.revision) == (2, 3)
    assert most[0] == 1  # one append at a time
