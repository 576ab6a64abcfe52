"""Bench section ``watch``: propagation latency, cached reads, full resync.

- set → callback latency through a :class:`~kvconf.Watcher` beside raw
  redis-py ``SPUBLISH`` → ``PubSub.get_message`` on the same server, both
  paced at the same rate, in alternating rounds (each keeps its best round's
  percentiles). The watcher's hub reads its socket itself (``_watch_conn``):
  that is part of what is measured;
- a cached ``Watcher.get`` beside ``dict.get`` on a dict of the same size;
- a cold full resync (start) of a tenant of 100,000 keys beside a raw
  ``HGETALL`` of the same hash;
- the Redis commands per second that 100 idle watchers of one tenant in one
  process cost, beside what one costs (the revision check and the fleet
  report are shared per process and tenant, ``_watch/monitor.py``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
import uuid
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import redis.asyncio as aredis

from .._redis.names import TenantKeys
from .._watch.reader import SPEEDUPS
from ..config import Settings
from ..store import Store
from ..watcher import Change, Watcher
from ._model import BenchContext, Figure, figure

RATE = 1000.0
IDLE_WATCHERS = 100
ROUNDS = 3


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _best(rounds: Sequence[tuple[list[float], ...]], which: int, q: float) -> float:
    """The lowest ``q`` percentile (µs) of series ``which`` over the rounds."""
    return min(_pct(r[which], q) for r in rounds) * 1e6


async def _paced(count: int, send: Callable[[int], Awaitable[object]]) -> None:
    """Call ``send(i)`` ``count`` times at :data:`RATE` per second."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / RATE - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(i)


async def _raw_latency(url: str, count: int) -> list[float]:
    channel = f"bench-raw:{{{uuid.uuid4().hex[:8]}}}:changes"
    sub, pub = aredis.Redis.from_url(url), aredis.Redis.from_url(url)
    pubsub = sub.pubsub()
    sent: dict[int, float] = {}
    latencies: list[float] = []
    try:
        await pubsub.ssubscribe(channel)
        await pubsub.get_message(timeout=1.0)

        async def receive() -> None:
            while len(latencies) < count:
                msg = await pubsub.get_message(timeout=1.0)
                if msg is not None and msg["type"] == "smessage":
                    seq = int(msg["data"].split(b",", 1)[0])
                    latencies.append(time.perf_counter() - sent[seq])

        async def send(i: int) -> None:
            sent[i] = time.perf_counter()
            await pub.spublish(channel, f'{i},{{"tenant":"x","changes":[]}}')

        reader = asyncio.create_task(receive())
        await _paced(count, send)
        await asyncio.wait_for(reader, 10)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await sub.aclose()
        await pub.aclose()
    return latencies


async def _watch_latency(
    store: Store, url: str, tenant: str, count: int
) -> tuple[list[float], list[float]]:
    """set→callback latencies, and the Store.set round trips of the same writes."""
    sent: dict[int, float] = {}
    latencies: list[float] = []
    round_trips: list[float] = []
    done = asyncio.Event()

    def on_change(change: Change) -> None:
        seq = change.changed["seq"].new if "seq" in change.changed else -1
        if seq in sent:
            latencies.append(time.perf_counter() - sent[seq])
            if len(latencies) == count:
                done.set()

    await store.set(tenant, "lat", "seq", -1)
    async with Watcher(tenant, url, environ={}, fleet_interval=0) as watcher:
        watcher.on_change(on_change, namespace="lat")

        async def send(i: int) -> None:
            sent[i] = started = time.perf_counter()
            await store.set(tenant, "lat", "seq", i)
            round_trips.append(time.perf_counter() - started)

        await _paced(count, send)
        await asyncio.wait_for(done.wait(), 10)
    return latencies, round_trips


class _Bench(msgspec.Struct, frozen=True):
    k17: int = 0


async def _get_cost(store: Store, url: str, tenant: str, quick: bool) -> tuple[float, float, float]:
    """ns per cached ``get``, per ``dict.get`` and per bound ``.value.k17`` read."""
    values = {f"k{i}": i for i in range(200)}
    await store.set_many(tenant, "get", values)
    number = 200_000 if quick else 1_000_000
    async with Watcher(tenant, url, environ={}, fleet_interval=0) as watcher:
        assert watcher.get("get", "k17") == 17
        scope = {"w": watcher, "d": dict(values), "b": watcher.bind("get", _Bench)}

        def best(stmt: str) -> float:
            timer = timeit.Timer(stmt, globals=scope)
            return min(timer.repeat(repeat=5, number=number)) / number * 1e9

        return best('w.get("get", "k17")'), best('d.get("k17")'), best("b.value.k17")


async def _resync_time(store: Store, url: str, tenant: str, keys: int) -> tuple[float, float]:
    chunk = 1000
    for base in range(0, keys, chunk):
        batch = {f"key-{i:06d}": {"n": i, "on": True} for i in range(base, min(keys, base + chunk))}
        await store.set_many(tenant, "big", batch)
    hgetall = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        raw = await store.redis.hgetall(TenantKeys(tenant).ns("big"))
        hgetall = min(hgetall, time.perf_counter() - started)
    assert len(raw) == keys
    cold = float("inf")
    for _ in range(3):
        watcher = Watcher(tenant, url, environ={}, fleet_interval=0, timeout=10)
        started = time.perf_counter()
        await watcher.start()
        cold = min(cold, time.perf_counter() - started)
        assert len(watcher.entries()["big"]) == keys
        await watcher.aclose()
    return cold * 1000, hgetall * 1000


async def _idle_cost(url: str, watchers: int, seconds: float) -> float:
    """Redis commands per second (server-wide) while ``watchers`` of one tenant idle."""
    tenant = f"bench-idle-{uuid.uuid4().hex[:8]}"
    async with Store(settings=Settings(redis_url=url, write_timeout=0)) as store:
        await store.set(tenant, "ns", "k", 1)
        started = [Watcher(tenant, url, environ={}) for _ in range(watchers)]
        admin = aredis.Redis.from_url(url)
        try:
            for watcher in started:
                await watcher.start()
            await asyncio.sleep(1.5)  # past the first check and fleet report
            before = (await admin.info("stats"))["total_commands_processed"]
            await asyncio.sleep(seconds)
            after = (await admin.info("stats"))["total_commands_processed"]
        finally:
            await admin.aclose()
            for watcher in started:
                await watcher.aclose()
            await store.delete_tenant(tenant, hard=True)
    return float(after - before - 1) / seconds  # the second INFO counts itself


async def run(ctx: BenchContext) -> list[Figure]:
    """Measure the watcher against raw pub/sub, dict reads and HGETALL."""
    count = 800 if ctx.quick else 2000
    big = 10_000 if ctx.quick else 100_000
    tenant = f"bench-watch-{uuid.uuid4().hex[:8]}"
    url = ctx.redis_url
    store = Store(
        settings=Settings(redis_url=url, history_limit=2, log_limit=1000, write_timeout=0)
    )
    try:
        # Rounds alternate raw and watched, so load from elsewhere on the
        # machine hits both alike; each keeps its best round's percentiles.
        rounds: list[tuple[list[float], list[float], list[float]]] = []
        for _ in range(ROUNDS):
            raw = await _raw_latency(url, count)
            watched, trips = await _watch_latency(store, url, tenant, count)
            rounds.append((raw, watched, trips))
            ctx.log(f"  round: set→callback p50 {_pct(watched, 0.5) * 1e6:,.0f} µs "
                    f"p99 {_pct(watched, 0.99) * 1e6:,.0f} µs; raw p50 "
                    f"{_pct(raw, 0.5) * 1e6:,.0f} µs p99 {_pct(raw, 0.99) * 1e6:,.0f} µs "
                    f"(mean {statistics.fmean(watched) * 1e6:,.0f} µs)")  # fmt: skip
        raw_p50, raw_p99 = _best(rounds, 0, 0.5), _best(rounds, 0, 0.99)
        w_p50, w_p99 = _best(rounds, 1, 0.5), _best(rounds, 1, 0.99)
        trip_p50, trip_p99 = _best(rounds, 2, 0.5), _best(rounds, 2, 0.99)
        get_ns, dict_ns, bound_ns = await _get_cost(store, url, tenant, ctx.quick)
        ctx.log(f"  cached get {get_ns:.0f} ns, bound .value.k {bound_ns:.0f} ns, "
                f"dict.get {dict_ns:.0f} ns")  # fmt: skip
        cold_ms, hgetall_ms = await _resync_time(store, url, tenant, big)
        ctx.log(f"  full resync of {big:,} keys {cold_ms:,.0f} ms vs HGETALL {hgetall_ms:,.0f} ms")
        window = 5.0 if ctx.quick else 10.0  # at least one fleet report round (5 s)
        idle_one = await _idle_cost(url, 1, window)
        idle_many = await _idle_cost(url, IDLE_WATCHERS, window)
        ctx.log(f"  idle Redis cost: {IDLE_WATCHERS} watchers {idle_many:.1f} commands/s, "
                f"1 watcher {idle_one:.1f} commands/s")  # fmt: skip
    finally:
        await store.delete_tenant(tenant, hard=True)
        await store.aclose()
    rate = (f"baseline: raw redis-py spublish and PubSub.get_message; "
            f"best of {ROUNDS} alternating rounds of {count} writes at {RATE:.0f}/s; "
            f"the Store.set round trip alone took "
            f"p50 {trip_p50:,.0f} µs, p99 {trip_p99:,.0f} µs")  # fmt: skip
    return [
        # the issue sets its goal on p99 (and the absolute bound); p50 is reported
        figure("propagation set→callback p50", "µs", w_p50, "SPUBLISH→receive p50", raw_p50,
               goal_ratio=None, higher_is_better=False, notes=rate),
        figure("propagation set→callback p99", "µs", w_p99, "SPUBLISH→receive p99", raw_p99,
               goal_ratio=1.5, higher_is_better=False, goal_absolute=2000, notes=rate),
        figure("cached get", "ns", get_ns, "dict.get", dict_ns, goal_ratio=2.0,
               higher_is_better=False, notes="Watcher.get of an existing key, 200-key namespace, "
               + ("C fast path" if SPEEDUPS else "pure Python (the C fast path is not built)")),
        figure("bound typed read", "ns", bound_ns, "dict.get", dict_ns, goal_ratio=2.0,
               higher_is_better=False, notes="Binding.value.<field> of a bound Struct"),
        figure(f"full resync, {big:,} keys", "ms", cold_ms, "raw HGETALL", hgetall_ms,
               goal_ratio=10.0, higher_is_better=False, goal_absolute=1000,
               notes="cold Watcher start: subscribe, atomic read, decode, index"),
        figure(f"idle cost, {IDLE_WATCHERS} watchers of a tenant", "cmd/s", idle_many,
               "1 watcher", idle_one, goal_ratio=1.5, higher_is_better=False, goal_absolute=3,
               notes=f"server-wide commands/s over {window:g} s with nothing written; "
               "check and fleet report shared per process and tenant"),
    ]  # fmt: skip
