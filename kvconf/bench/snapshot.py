"""Bench section ``snapshot``: save and restore throughput beside raw baselines.

Data: ``1,000,000`` keys across ``1,000`` tenants (``--quick``: 50,000 across
100), two namespaces each, every key written twice through the real write
path (``Store.set_many``, 500-key change sets, many in flight at once) so it
has two versions in its namespace's history zset and the log holds the
change sets. Save (one MULTI/EXEC read per tenant: values, trash and one
ZRANGE per namespace history) is compared with a raw dump in the same run
(SCAN + pipelined HGETALL of the namespace hashes, msgpack, the same zstd
level, fsync) and with a raw dump of every key; restore (verify, safety
snapshot, one MULTI/EXEC per tenant into an emptied Redis) is compared with
raw pipelined HSETs of the same hashes and judged against an absolute floor.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aredis
import zstandard

from .. import snapshot
from .._redis.names import PREFIX
from ..config import Settings
from ..store import Store
from ._model import BenchContext, Figure, figure

NAMESPACES = 2


async def _load(store: Store, tenants: int, per_tenant: int, concurrency: int) -> None:
    per_ns = per_tenant // NAMESPACES
    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for version in range(2):
        for t in range(tenants):
            for ns in range(NAMESPACES):
                queue.put_nowait((version, t, ns))

    async def worker() -> None:
        while not queue.empty():
            version, t, ns = queue.get_nowait()
            values = {f"key{k}": {"v": version, "n": k, "s": "x" * 24} for k in range(per_ns)}
            await store.set_many(f"bench-{t:05d}", f"ns{ns}", values, reason="bench")

    # the second version of a tenant's keys must follow its first: two passes
    half = queue.qsize() // 2
    first: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for _ in range(half):
        first.put_nowait(queue.get_nowait())
    queue, rest = first, queue
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    queue = rest
    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _scan_dump(
    client: Any,
    path: Path,
    match: str,
    read: Callable[[list[bytes]], Awaitable[tuple[Any, int]]],
) -> int:
    """SCAN ``match`` in batches of 500; ``read`` turns a batch into (payload, keys).

    Each payload is msgpack-encoded into one zstd stream (level 3, as
    snapshots use), then the file is fsynced. Returns the keys counted.
    """
    keys = 0
    encoder = msgspec.msgpack.Encoder()
    deflate = zstandard.ZstdCompressor(level=3).compressobj()
    with open(path, "wb") as fh:  # noqa: ASYNC230 - a benchmark, one file
        batch: list[bytes] = []

        async def drain() -> None:
            nonlocal keys
            payload, found = await read(batch)
            fh.write(deflate.compress(encoder.encode(payload)))
            keys += found
            batch.clear()

        async for name in client.scan_iter(match=match, count=5000):
            batch.append(name)
            if len(batch) >= 500:
                await drain()
        if batch:
            await drain()
        fh.write(deflate.flush())
        fh.flush()
        os.fsync(fh.fileno())
    return keys


async def _raw_dump(client: Any, path: Path) -> tuple[int, dict[bytes, dict[bytes, bytes]]]:
    """The baseline: SCAN + pipelined HGETALL, msgpack, same zstd level, fsync."""
    kept: dict[bytes, dict[bytes, bytes]] = {}

    async def read(batch: list[bytes]) -> tuple[Any, int]:
        async with client.pipeline(transaction=False) as pipe:
            for name in batch:
                pipe.hgetall(name)
            hashes = await pipe.execute()
        kept.update(zip(batch, hashes, strict=True))
        return list(zip(batch, hashes, strict=True)), sum(len(h) for h in hashes)

    return await _scan_dump(client, path, f"{PREFIX}:{{*}}:ns:*", read), kept


def _plain(reply: Any) -> Any:
    if isinstance(reply, dict):
        return [x for pair in reply.items() for x in pair]
    if isinstance(reply, set):
        return list(reply)
    if isinstance(reply, list):
        return [x for item in reply for x in (item if isinstance(item, list | tuple) else (item,))]
    return reply


async def _raw_full_dump(client: Any, path: Path) -> int:
    """The same data as a snapshot, raw: SCAN + pipelined reads by key kind, no pinning."""

    async def read(batch: list[bytes]) -> tuple[Any, int]:
        async with client.pipeline(transaction=False) as pipe:
            for name in batch:
                if b":hist:" in name or name.endswith(b":log"):
                    pipe.zrange(name, 0, -1, withscores=True)
                elif b":ns:" in name or name.endswith((b":meta", b":schema")):
                    pipe.hgetall(name)
                elif name.endswith(b":nss"):
                    pipe.smembers(name)
                else:
                    pipe.get(name)
            replies = await pipe.execute()
        found = sum(len(r) for n, r in zip(batch, replies, strict=True) if b":ns:" in n)
        return [batch, [_plain(r) for r in replies]], found

    return await _scan_dump(client, path, f"{PREFIX}:{{*", read)


async def _raw_load(client: Any, hashes: dict[bytes, dict[bytes, bytes]]) -> int:
    keys = 0
    items = list(hashes.items())
    for at in range(0, len(items), 200):
        async with client.pipeline(transaction=False) as pipe:
            for name, fields in items[at : at + 200]:
                pipe.hset(name, mapping=fields)
                keys += len(fields)
            await pipe.execute()
    return keys


async def run(ctx: BenchContext) -> list[Figure]:
    """Save and restore keys/s of kvconf snapshots against raw dumps."""
    tenants, total = (100, 50_000) if ctx.quick else (1_000, 1_000_000)
    per_tenant = total // tenants
    client = aredis.Redis.from_url(
        ctx.redis_url, max_connections=ctx.concurrency + 8, socket_timeout=120
    )
    # write_timeout=0: a bench measures speed; a limit would turn queueing on a busy
    # machine into refused writes.
    store = Store(client=client, settings=Settings(redis_url=ctx.redis_url, write_timeout=0))
    try:
        await client.flushall(asynchronous=True)
        started = time.perf_counter()
        await _load(store, tenants, per_tenant, min(ctx.concurrency, 32))
        ctx.log(f"  loaded {total:,} keys x 2 versions in {time.perf_counter() - started:.1f}s")
        with tempfile.TemporaryDirectory(prefix="kvconf-bench-snap-") as tmp:
            workdir = Path(tmp)
            started = time.perf_counter()
            raw_keys, hashes = await _raw_dump(client, workdir / "raw.bin")
            raw_save = raw_keys / (time.perf_counter() - started)
            started = time.perf_counter()
            await _raw_full_dump(client, workdir / "raw-full.bin")
            raw_full = raw_keys / (time.perf_counter() - started)
            started = time.perf_counter()
            info = await snapshot.save(store, workdir)
            save_rate = info.keys / (time.perf_counter() - started)
            ctx.log(
                f"  save {save_rate:,.0f} keys/s ({info.size / 1e6:,.0f} MB, {info.versions:,} "
                f"versions) vs raw {raw_save:,.0f} keys/s "
                f"({(workdir / 'raw.bin').stat().st_size / 1e6:,.0f} MB, values only); "
                f"raw dump of the same keys {raw_full:,.0f} keys/s"
            )
            await client.flushall(asynchronous=True)
            started = time.perf_counter()
            loaded = await _raw_load(client, hashes)
            raw_restore = loaded / (time.perf_counter() - started)
            del hashes
            await client.flushall(asynchronous=True)
            started = time.perf_counter()
            report = await snapshot.restore(store, info.path, safety_dir=workdir / "safety")
            restore_rate = info.keys / (time.perf_counter() - started)
            assert len(report.tenants) == tenants
            ctx.log(f"  restore {restore_rate:,.0f} keys/s vs raw HSET {raw_restore:,.0f} keys/s")
    finally:
        await client.flushall(asynchronous=True)
        await store.aclose()
    return [
        figure(
            "save (values, history, log, schemas)", "keys/s", save_rate,
            "SCAN + pipelined HGETALL + zstd", raw_save, goal_ratio=0.8,
            notes=f"{total:,} keys across {tenants:,} tenants, 2 versions each",
        ),
        figure(
            "save, against a raw dump of the same data", "keys/s", save_rate,
            "SCAN + pipelined HGETALL/ZRANGE/GET of every key + zstd", raw_full,
            goal_ratio=0.8, notes="same keys as the snapshot, but no per-tenant revision pinning",
        ),
        figure(
            "restore (verify + one transaction per tenant)", "keys/s", restore_rate,
            "pipelined HSET of the same hashes", raw_restore, goal_ratio=0.0,
            goal_absolute=100_000,
        ),
    ]  # fmt: skip
