"""Bench section ``store``: single-key set and get beside raw HSET and HGET.

Both sides run the same number of operations from ``ctx.concurrency``
concurrent callers on one asyncio client, against the same real Redis, in
alternating rounds so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aredis

from ..config import Settings
from ..store import Store
from ._model import BenchContext, Figure, figure

ROUNDS = 3


async def _throughput(
    op: Callable[[int], Awaitable[object]], total: int, concurrency: int
) -> float:
    """Operations per second of ``total`` calls of ``op`` from ``concurrency`` tasks."""
    per_task = total // concurrency

    async def worker(base: int) -> None:
        for i in range(per_task):
            await op(base + i)

    start = time.perf_counter()
    await asyncio.gather(*(worker(t * per_task) for t in range(concurrency)))
    return per_task * concurrency / (time.perf_counter() - start)


async def run(ctx: BenchContext) -> list[Figure]:
    """Measure Store.set/get and raw HSET/HGET; best of alternating rounds."""
    total = 5_000 if ctx.quick else 40_000
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    keys = [f"k{i % 100}" for i in range(total)]
    raw_hash = f"bench-raw:{{{tenant}}}"
    pool = ctx.concurrency + 8
    raw = aredis.Redis.from_url(ctx.redis_url, max_connections=pool)
    store = Store(
        client=aredis.Redis.from_url(ctx.redis_url, max_connections=pool),
        settings=Settings(
            redis_url=ctx.redis_url, history_limit=10, log_limit=1000, write_timeout=0
        ),
    )
    try:
        await store.set(tenant, "ns", "warm", 0)
        payload = {"timeout": 30, "mode": "fast", "hosts": ["a", "b"]}
        encoded = b'{"timeout":30,"mode":"fast","hosts":["a","b"]}'
        best = {"set": 0.0, "hset": 0.0, "get": 0.0, "hget": 0.0}
        for _ in range(ROUNDS):
            best["hset"] = max(
                best["hset"],
                await _throughput(
                    lambda i: raw.hset(raw_hash, keys[i], encoded), total, ctx.concurrency
                ),
            )
            best["set"] = max(
                best["set"],
                await _throughput(
                    lambda i: store.set(tenant, "ns", keys[i], payload), total, ctx.concurrency
                ),
            )
            best["hget"] = max(
                best["hget"],
                await _throughput(lambda i: raw.hget(raw_hash, keys[i]), total, ctx.concurrency),
            )
            best["get"] = max(
                best["get"],
                await _throughput(
                    lambda i: store.get(tenant, "ns", keys[i]), total, ctx.concurrency
                ),
            )
            ctx.log(
                f"  set {best['set']:,.0f}/s vs HSET {best['hset']:,.0f}/s; "
                f"get {best['get']:,.0f}/s vs HGET {best['hget']:,.0f}/s"
            )
        await store.delete_tenant(tenant, hard=True)
        await raw.delete(raw_hash)
    finally:
        await raw.aclose()
        await store.aclose()
    note = f"{ctx.concurrency} concurrent callers, {total} ops, best of {ROUNDS}"
    return [
        figure("set", "ops/s", best["set"], "raw HSET", best["hset"], goal_ratio=0.5, notes=note),
        figure("get", "ops/s", best["get"], "raw HGET", best["hget"], goal_ratio=0.9, notes=note),
    ]
