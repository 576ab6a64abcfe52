"""Embedded durability: the data dir survives restarts and kill -9."""

from __future__ import annotations

import asyncio
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
from kvconf._snapshot.journal import JournalWriter, journal_generations
from kvconf.exceptions import TenantNotFound, Unavailable
from kvconf.snapshot import list_snapshots, verify

from .redis_server import free_port

ENV = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}


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


def test_cli_writes_are_durable_and_a_held_dir_is_refused(tmp_path: Path) -> None:
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
        refused = _kvconf(data_dir, "get", "acme", "ai-1")
        assert refused.returncode == 6
        message = " ".join(refused.stderr.split())
        assert "is in use by `kvconf serve`" in message
        assert "at http://127.0.0.1:9:" in message
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
