"""Crash safety of snapshot files: killed saves, injected failures, damage."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvconf import Settings, Store
from kvconf._snapshot import format as fmt
from kvconf.exceptions import SnapshotCorrupt, SnapshotError
from kvconf.snapshot import save, verify, write_snapshot

from .redis_server import RedisServer

SAVER = """
import asyncio, sys
from pathlib import Path
from kvconf import Settings, Store
from kvconf.snapshot import write_snapshot

async def main():
    store = Store(settings=Settings(redis_url=sys.argv[1]))
    path = Path(sys.argv[2])
    print("ready", flush=True)
    while True:
        await write_snapshot(store, path, [sys.argv[3]])
        print("saved", flush=True)

asyncio.run(main())
"""


def _content(path: Path) -> list[tuple[str, int, dict[str, list[bytes]]]]:
    with fmt.SnapshotReader(path) as reader:
        return [(d.tenant, d.revision, d.values) for d in reader.dumps()]


@pytest.mark.slow
async def test_killed_saves_never_leave_a_wrong_file(
    shared_redis: RedisServer, tmp_path: Path, tenant: str
) -> None:
    store = Store(settings=Settings(redis_url=shared_redis.url))
    try:
        for ns in range(20):
            values = {f"key{i}": {"n": i, "pad": "x" * 200} for i in range(100)}
            await store.set_many(tenant, f"ns{ns}", values)
        target = tmp_path / "fixed.kvsnap"
        await write_snapshot(store, target, [tenant])
        expected = [c for c in _content(target) if c[0] == tenant]
    finally:
        await store.aclose()
    rng = random.Random(5)
    completed_before = target.stat().st_mtime_ns
    replaced = 0
    for trial in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, shared_redis.url, str(target), tenant],
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        if trial % 2:
            # every other trial lets one save complete first, however slow the
            # machine, so the kill lands in a later save that replaces a file
            assert proc.stdout.readline().strip() == b"saved"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        # the file at the target name always verifies and is right
        verify(target)
        got = [c for c in _content(target) if c[0] == tenant]
        assert got == expected
        replaced += target.stat().st_mtime_ns != completed_before
        # leftovers of the interrupted save either fail to verify or are right
        for leftover in tmp_path.iterdir():
            if leftover == target:
                continue
            try:
                verify(leftover)
            except SnapshotError:
                continue
            assert [c for c in _content(leftover) if c[0] == tenant] == expected
            leftover.unlink()
    assert replaced > 0  # some trials did complete a save before the kill


@pytest.mark.parametrize("step", ["write", "fsync", "replace", "compress"])
async def test_injected_failure_at_each_step_keeps_previous_file(
    store: Store, tenant: str, tmp_path: Path, step: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set_many(tenant, "ns", {f"k{i}": i for i in range(50)})
    target = tmp_path / "fixed.kvsnap"
    await write_snapshot(store, target, [tenant])
    before = target.read_bytes()
    await store.set(tenant, "ns", "k0", "changed")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "injected failure")

    if step == "write":
        calls = {"n": 0}
        real = fmt._Sink.write

        def flaky(self: fmt._Sink, data: bytes) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            real(self, data)

        monkeypatch.setattr(fmt._Sink, "write", flaky)
    elif step == "fsync":
        monkeypatch.setattr(fmt.os, "fsync", boom)
    elif step == "replace":
        monkeypatch.setattr(fmt.os, "replace", boom)
    else:
        monkeypatch.setattr(fmt.SnapshotWriter, "add_batch", boom)
    with pytest.raises(OSError, match=r"injected|No space"):
        await write_snapshot(store, target, [tenant])
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fixed.kvsnap"]
    verify(target)


async def test_every_truncation_and_many_flips_are_refused(
    store: Store, tenant: str, tmp_path: Path
) -> None:
    await store.set_many(tenant, "ns", {"a": 1, "b": [1, 2, 3]})
    info = await save(store, tmp_path, [tenant])
    data = Path(info.path).read_bytes()
    bad = tmp_path / "bad.kvsnap"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(SnapshotError):
            verify(bad)
    rng = random.Random(7)
    for _ in range(300):
        flipped = bytearray(data)
        at = rng.randrange(len(data))
        flipped[at] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotError):
            verify(bad)


def test_mode_and_no_stray_files(tmp_path: Path) -> None:
    path = tmp_path / "empty.kvsnap"
    with fmt.SnapshotWriter(path) as writer:
        writer.finish()
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert verify(path).tenants == []
    assert [p.name for p in tmp_path.iterdir()] == ["empty.kvsnap"]
    path.write_bytes(b"not a snapshot at all, just text")
    with pytest.raises(SnapshotCorrupt, match="bad magic"):
        verify(path)


HALF_SAVER = """
import sys, time
from pathlib import Path
from kvconf._snapshot import format as fmt

writer = fmt.SnapshotWriter(Path(sys.argv[1]))
writer._sink.write(b"x" * 1_000_000)  # a save in the middle of its body
writer._fh.flush()
print("writing", flush=True)
time.sleep(60)
"""


async def test_a_killed_save_leaves_no_temporary_after_the_next_save(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HALF_SAVER, str(tmp_path / "kvconf-killed.kvsnap")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        (orphan,) = tmp_path.glob(".kvconf-killed.kvsnap.tmp-*")
        assert str(proc.pid) in orphan.name
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    # a concurrent save of this (live) process keeps its temporary
    live = fmt.SnapshotWriter(tmp_path / "kvconf-live.kvsnap")
    store = Store("memory://stale-temporaries")
    try:
        await store.set("acme", "ns", "k", 1)
        info = await save(store, tmp_path)
    finally:
        await store.aclose()
    assert not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == [live._tmp.name]
    live.abort()
    assert [p.name for p in tmp_path.iterdir()] == [Path(info.path).name]


def test_stale_temporaries_by_pid_and_age(tmp_path: Path) -> None:
    now = time.time()
    dead = tmp_path / ".kvconf-a.kvsnap.tmp-999999999-00ff"  # no such PID
    mine = tmp_path / f".kvconf-b.kvsnap.tmp-{os.getpid()}-00ff"
    old_style_new = tmp_path / ".kvconf-c.kvsnap.tmp-0a1b2c3d"
    old_style_old = tmp_path / ".kvconf-d.kvsnap.tmp-4e5f6a7b"
    other = tmp_path / ".notes.tmp-1"
    for path in (dead, mine, old_style_new, old_style_old, other):
        path.write_bytes(b"partial")
    os.utime(old_style_old, (now - 2 * fmt.STALE_UNKNOWN, now - 2 * fmt.STALE_UNKNOWN))
    removed = fmt.remove_stale_temporaries(tmp_path, now=now)
    assert sorted(removed) == sorted([dead, old_style_old])
    assert [p.exists() for p in (mine, old_style_new, other)] == [True, True, True]
    # a live PID's temporary untouched for a day: the PID was reused
    later = fmt.remove_stale_temporaries(tmp_path, now=now + 2 * fmt.STALE_LIVE)
    assert sorted(later) == sorted([mine, old_style_new])
    assert other.exists()
