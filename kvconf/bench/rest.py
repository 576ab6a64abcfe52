"""Bench section ``rest``: GET and PUT of one key over HTTP beside ``/healthz``.

``kvconf serve`` (uvicorn, one worker) runs as a subprocess against the
private Redis; a small keep-alive HTTP/1.1 load generator (50 connections on
asyncio streams, far cheaper per request than a full client, so the server is
what is measured; it uses a small share of one core) drives each endpoint for
a fixed time. The trivial endpoint of the same app, measured in the same run,
is the baseline: it pays for the same HTTP stack, middleware and event loop,
so the ratio is the cost of the store call. Rounds alternate (baseline, GET,
PUT, again) so load from elsewhere on the machine hits all three alike; the
best round of each is kept, and every round's ratio is logged.

GET key is served by the API's read cache once its watcher of the tenant is
in step (the warm-up read starts it); PUT key is one atomic write script.

The Python client's side: ``Store("http://...")`` (HttpStore) ``get`` and
``set`` of the same keys, one call at a time, beside raw ``httpx`` requests
to the same endpoints (decoding the JSON answer too) as the baseline, in
alternating rounds of the same run: the ratio is what the client adds to a
round trip (URL building, name checks, error mapping, result types).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._model import BenchContext, Figure, figure

CONNECTIONS = 50
ROUNDS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(port: int, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"kvconf serve exited with {proc.returncode}")
        try:
            status, _ = await _one(port, b"GET /readyz HTTP/1.1\r\nHost: b\r\n\r\n")
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("kvconf serve did not become ready")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _one(port: int, request: bytes) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.perf_counter()
        writer.write(request)
        status = await _read_response(reader)
        return status, time.perf_counter() - start
    finally:
        writer.close()
        await writer.wait_closed()


async def _load(
    port: int, make: Callable[[int], bytes], seconds: float
) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of ``make(i)`` requests for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def connection(n: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        try:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                writer.write(make(i))
                status = await _read_response(reader)
                latencies.append(time.perf_counter() - start)
                if status >= 400:
                    errors += 1
                i += CONNECTIONS
        finally:
            writer.close()
            await writer.wait_closed()

    began = time.perf_counter()
    await asyncio.gather(*(connection(n) for n in range(CONNECTIONS)))
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{errors} requests failed during the REST benchmark")
    latencies.sort()
    if not latencies:
        return 0.0, 0.0, 0.0
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000
    return len(latencies) / elapsed, p50, p99


def _get(path: str) -> Callable[[int], bytes]:
    data = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    return lambda _i: data


def _put(tenant: str) -> Callable[[int], bytes]:
    def make(i: int) -> bytes:
        body = b'{"value": %d}' % i
        return (
            b"PUT /api/v1/tenants/%s/namespaces/svc/keys/k%d HTTP/1.1\r\nHost: bench\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (tenant.encode(), i % 100, len(body), body)
        )

    return make


async def _paired(
    first: Callable[[int], Awaitable[Any]],
    second: Callable[[int], Awaitable[Any]],
    seconds: float,
) -> tuple[tuple[list[float], list[float]], tuple[float, float]]:
    """Seconds of each call of ``first`` and ``second``, interleaved one at a time
    (alternating which goes first) for ``seconds`` so load from elsewhere on the
    machine hits both alike; and the mean CPU seconds of this process per call
    (the client's own cost: the server is another process)."""
    times: tuple[list[float], list[float]] = ([], [])
    cpu = [0.0, 0.0]
    stop = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < stop:
        order = ((first, 0), (second, 1))
        for call, n in order if i % 2 == 0 else order[::-1]:
            start, used = time.perf_counter(), time.process_time()
            await call(i)
            cpu[n] += time.process_time() - used
            times[n].append(time.perf_counter() - start)
        i += 1
    return times, (cpu[0] / len(times[0]), cpu[1] / len(times[1]))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


async def _client(
    ctx: BenchContext, port: int, tenant: str, seconds: float, rounds: int
) -> list[Figure]:
    """HttpStore.get/set against raw httpx GET/PUT of the same keys (median round trip)."""
    import httpx

    from ..store import Store

    base = f"http://127.0.0.1:{port}"
    path = f"/api/v1/tenants/{tenant}/namespaces/svc/keys"
    async with Store(base) as store, httpx.AsyncClient(base_url=base) as raw:

        async def raw_get(_i: int) -> Any:
            resp = await raw.get(f"{path}/k7")
            resp.raise_for_status()
            return resp.json()

        async def raw_put(i: int) -> Any:
            resp = await raw.put(f"{path}/k{i % 100}", json={"value": i})
            resp.raise_for_status()
            return resp.json()

        async def store_get(_i: int) -> Any:
            return await store.get(tenant, "svc", "k7")

        async def store_set(i: int) -> Any:
            return await store.set(tenant, "svc", f"k{i % 100}", i)

        pairs = {"get": (raw_get, store_get), "set": (raw_put, store_set)}
        for raw_call, store_call in pairs.values():
            await _paired(raw_call, store_call, 0.5)  # warm up: connections, caches
        pooled: dict[str, tuple[list[float], list[float]]] = {"get": ([], []), "set": ([], [])}
        cpu: dict[str, list[tuple[float, float]]] = {"get": [], "set": []}
        for _ in range(rounds):
            said = []
            for name, (raw_call, store_call) in pairs.items():
                (raw_times, store_times), used = await _paired(raw_call, store_call, seconds)
                pooled[name][0].extend(raw_times)
                pooled[name][1].extend(store_times)
                cpu[name].append(used)
                raw_p50, store_p50 = _median(raw_times) * 1e6, _median(store_times) * 1e6
                said.append(
                    f"{name}: raw {raw_p50:,.0f} µs, Store {store_p50:,.0f} µs "
                    f"({store_p50 / raw_p50:.2f}x; client CPU {used[0] * 1e6:,.0f} vs "
                    f"{used[1] * 1e6:,.0f} µs)"
                )
            ctx.log("  client round: " + "; ".join(said))

    def note(name: str) -> str:
        raw_cpu = min(c[0] for c in cpu[name]) * 1e6
        store_cpu = min(c[1] for c in cpu[name]) * 1e6
        return (
            f"median round trip, one call at a time, raw and Store interleaved, {rounds} "
            f"rounds of {seconds:.0f} s; client CPU per call: raw {raw_cpu:,.0f} µs, "
            f"Store {store_cpu:,.0f} µs"
        )

    (raw_gets, store_gets), (raw_puts, store_sets) = pooled["get"], pooled["set"]
    return [
        figure("Store.get over HTTP", "µs", _median(store_gets) * 1e6, "raw httpx GET",
               _median(raw_gets) * 1e6, goal_ratio=1.3, higher_is_better=False,
               notes=note("get")),
        figure("Store.set over HTTP", "µs", _median(store_sets) * 1e6, "raw httpx PUT",
               _median(raw_puts) * 1e6, goal_ratio=1.3, higher_is_better=False,
               notes=note("set")),
    ]  # fmt: skip


async def run(ctx: BenchContext) -> list[Figure]:
    """Serve the API on the private Redis and measure GET/PUT key against /healthz."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    cmd = [
        sys.executable, "-c", "from kvconf.cli import main; main()", "serve",
        "--port", str(port), "--redis-url", ctx.redis_url, "--log-level", "warning",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seconds = 2.0 if ctx.quick else 4.0
    rounds = 2 if ctx.quick else ROUNDS
    tenant = f"bench-rest-{os.getpid()}"
    try:
        await _wait_ready(port, proc)
        for i in range(100):
            await _one(port, _put(tenant)(i))
        key = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k7"
        best: dict[str, tuple[float, float, float]] = {}
        for make in (_get("/healthz"), _get(key), _put(tenant), _get(key)):
            await _load(port, make, 1.0)  # warm up (the first GET starts the cache)
        for _ in range(rounds):
            found: dict[str, float] = {}
            for name, make in [
                ("healthz", _get("/healthz")),
                ("get", _get(key)),
                ("put", _put(tenant)),
            ]:
                rps, p50, p99 = await _load(port, make, seconds)
                found[name] = rps
                ctx.log(f"  {name}: {rps:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms")
                old = best.get(name)
                if old is None or rps > old[0]:
                    best[name] = (rps, p50, p99)
            base = found["healthz"] or 1.0
            get, put = found["get"] / base, found["put"] / base
            ctx.log(f"  round ratios: GET {get:.2f}x, PUT {put:.2f}x")
        client = await _client(ctx, port, tenant, seconds / 2, rounds)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    base_rps, base_p50, base_p99 = best["healthz"]
    note = (
        f"{CONNECTIONS} keep-alive connections, best of {rounds} rounds of {seconds:.0f} s, "
        f"uvicorn 1 worker"
    )
    p50s = (
        f"p50: healthz {base_p50:.1f} ms, GET {best['get'][1]:.1f} ms, PUT {best['put'][1]:.1f} ms"
    )
    return [
        figure("GET key", "req/s", best["get"][0], "GET /healthz", base_rps,
               goal_ratio=0.7, notes=note + "; served by the read cache"),
        figure("PUT key", "req/s", best["put"][0], "GET /healthz", base_rps,
               goal_ratio=0.5, notes=note),
        figure("GET key p99", "ms", best["get"][2], "GET /healthz p99", base_p99,
               goal_ratio=None, higher_is_better=False, notes=p50s),
        figure("PUT key p99", "ms", best["put"][2], "GET /healthz p99", base_p99,
               goal_ratio=None, higher_is_better=False, notes=p50s),
        *client,
    ]  # fmt: skip
