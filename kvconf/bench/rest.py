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
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

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
    ]  # fmt: skip
