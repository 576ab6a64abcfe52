"""Bench section ``fleet``: N SSE watchers on one API worker.

For each N (100 and 1,000; also 5,000 without ``--quick``) a fresh
``kvconf serve`` (uvicorn, one worker) runs on the private Redis, and a
helper process opens N watch streams of one tenant on raw asyncio streams
(far cheaper per connection than an HTTP client, so the server is what is
measured). Then:

- **delivery**: PUTs of one key, spaced out; for each, the time from the
  PUT's start to the moment the *last* watcher received its event (clock:
  ``CLOCK_MONOTONIC``, shared by both processes); p50 and p99 over the PUTs.
  Goal: p99 ≤ 250 ms.
- **memory per connection**: the server's RSS with N streams open minus its
  RSS before, divided by N. Goal: ≤ 50 KB.
- **Redis idle commands/s**: ``INFO commandstats`` over an idle window with
  the fleet connected. Goal: the same at the largest N as at N = 100
  (ratio ≤ 1.5): idle streams cost Redis nothing.

The file-descriptor limit is raised to its hard limit first (the server and
the helper inherit it); N is capped to fit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import time
from typing import Any

import redis.asyncio as aredis

from ._model import BenchContext, Figure, figure
from .rest import _free_port, _one, _wait_ready

__all__ = ["run", "watchers_main"]

P99_GOAL_MS = 250.0
MEMORY_GOAL_KB = 50.0
IDLE_RATIO_GOAL = 1.5
_ID = re.compile(rb"id: (\d+)\r?\n")


def _raise_nofile(wanted: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit toward ``wanted``; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- the helper process: N lean watchers ----------------------------------------


async def _watch_one(
    port: int, tenant: str, received: dict[int, list[float]], opened: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/v1/tenants/{tenant}/watch HTTP/1.1\r\nHost: fleet\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if head[9:12] != b"200":
        raise RuntimeError(f"watch stream refused: {head[:40]!r}")
    opened[0] += 1
    buffer = b""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            now = time.monotonic()
            buffer += data
            end = 0
            for match in _ID.finditer(buffer):
                received.setdefault(int(match.group(1)), []).append(now)
                end = match.end()
            buffer = buffer[end:] if end else buffer[-64:]
    finally:
        writer.close()


async def _watchers(port: int, tenant: str, n: int) -> None:
    received: dict[int, list[float]] = {}
    opened = [0]
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(_watch_one(port, tenant, received, opened)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # within the listen backlog
    deadline = time.monotonic() + 60
    while opened[0] < n:
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed or time.monotonic() > deadline:
            why = f": {failed[0].exception()}" if failed else ""
            print(json.dumps({"error": f"{opened[0]} of {n} streams opened{why}"}), flush=True)
            return
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # the parent closes stdin: done
    report = {rev: {"last": max(times), "count": len(times)} for rev, times in received.items()}
    print(json.dumps({"received": report}), flush=True)
    for task in tasks:
        task.cancel()


def watchers_main() -> None:
    """Entry point of the helper process: ``port tenant n`` in ``sys.argv``."""
    port, tenant, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    asyncio.run(_watchers(port, tenant, n))


# -- the parent: server, fleet, measurements -------------------------------------


async def _put(port: int, tenant: str, i: int) -> tuple[float, int]:
    body = b'{"value": %d}' % i
    request = (
        b"PUT /api/v1/tenants/%s/namespaces/svc/keys/k HTTP/1.1\r\nHost: fleet\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (tenant.encode(), len(body), body)
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        start = time.monotonic()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        payload = json.loads(await reader.readexactly(length))
        if "revision" not in payload:
            raise RuntimeError(f"PUT failed: {head[:12].decode()} {payload.get('error')}")
        return start, int(payload["revision"])
    finally:
        writer.close()


async def _idle_rate(url: str, seconds: float) -> float:
    client = aredis.Redis.from_url(url)
    try:

        async def calls() -> int:
            stats: dict[str, Any] = await client.info("commandstats")
            return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

        before = await calls()
        await asyncio.sleep(seconds)
        return (await calls() - before) / seconds
    finally:
        await client.aclose()


async def _round(ctx: BenchContext, n: int, puts: int) -> dict[str, float]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    env["KVCONF_MAX_STREAMS"] = str(n + 100)
    cmd = [
        sys.executable, "-c", "from kvconf.cli import main; main()", "serve",
        "--port", str(port), "--redis-url", ctx.redis_url, "--log-level", "warning",
    ]  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        *cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    tenant = f"bench-fleet-{os.getpid()}-{n}"
    helper = None
    try:
        await _wait_ready(port, server)
        await _put(port, tenant, -1)
        await _one(port, f"GET /api/v1/tenants/{tenant} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        await asyncio.sleep(0.5)
        rss_before = _rss_kb(server.pid)
        helper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from kvconf.bench.fleet import watchers_main; watchers_main()",
            str(port), tenant, str(n),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert helper.stdout is not None
        assert helper.stdin is not None
        line = await asyncio.wait_for(helper.stdout.readline(), 120)
        if line.strip() != b"READY":
            raise RuntimeError(f"fleet helper: {line.decode(errors='replace').strip()}")
        await asyncio.sleep(1.0)  # settle: every stream joined the feed
        rss_after = _rss_kb(server.pid)
        idle = await _idle_rate(ctx.redis_url, 2.0 if ctx.quick else 4.0)
        sent: dict[int, float] = {}
        for i in range(puts):
            start, revision = await _put(port, tenant, i)
            sent[revision] = start
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.0)
        helper.stdin.close()
        out = await asyncio.wait_for(helper.stdout.readline(), 60)
        received = json.loads(out)["received"]
        await helper.wait()
        helper = None
    finally:
        if helper is not None and helper.returncode is None:
            helper.kill()
            await helper.wait()
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
    latencies = []
    missing = 0
    for revision, start in sent.items():
        got = received.get(str(revision))
        if got is None or got["count"] < n:
            missing += n - (0 if got is None else got["count"])
            continue
        latencies.append((got["last"] - start) * 1000)
    if missing:
        raise RuntimeError(f"{missing} deliveries missing with {n} watchers")
    latencies.sort()
    found = {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[max(0, int(len(latencies) * 0.99) - 1)],
        "kb_per_conn": max(0, rss_after - rss_before) / n,
        "idle_cmds": idle,
    }
    ctx.log(
        f"  N={n}: delivery to all p50 {found['p50']:.1f} ms, p99 {found['p99']:.1f} ms; "
        f"{found['kb_per_conn']:.1f} KB/connection; Redis idle {idle:.1f} commands/s"
    )
    return found


async def run(ctx: BenchContext) -> list[Figure]:
    """Measure delivery latency, memory per connection and idle Redis cost for N watchers."""
    sizes = [100, 1000] if ctx.quick else [100, 1000, 5000]
    limit = _raise_nofile(2 * max(sizes) + 1024)
    sizes = [n for n in sizes if 2 * n + 256 <= limit] or [min(100, max(1, limit // 4))]
    puts = 20 if ctx.quick else 60
    results = {n: await _round(ctx, n, puts) for n in sizes}
    figures = []
    note = f"{puts} PUTs 250 ms apart, one uvicorn worker, watchers in a helper process"
    for n, found in results.items():
        figures.append(
            figure(f"delivery p99, N={n}", "ms", found["p99"], "goal", P99_GOAL_MS,
                   goal_ratio=1.0, higher_is_better=False,
                   notes=f"{note}; p50 {found['p50']:.1f} ms")
        )  # fmt: skip
        figures.append(
            figure(f"memory per connection, N={n}", "KB", found["kb_per_conn"], "goal",
                   MEMORY_GOAL_KB, goal_ratio=1.0, higher_is_better=False,
                   notes="server RSS delta / N")
        )  # fmt: skip
    largest = max(results)
    base = results[min(results)]["idle_cmds"]
    figures.append(
        figure(f"Redis idle commands/s, N={largest}", "cmd/s", results[largest]["idle_cmds"],
               f"N={min(results)}", base, goal_ratio=IDLE_RATIO_GOAL, higher_is_better=False,
               notes="INFO commandstats over an idle window, fleet connected")
    )  # fmt: skip
    return figures
