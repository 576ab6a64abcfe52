"""Bench section ``fleet``: N SSE watchers on one API worker.

For each N (100 and 1,000; also 5,000 without ``--quick``) a fresh
``kvconf serve`` (uvicorn, one worker) runs on the private Redis, and helper
processes (one per 2,500 watchers) open N watch streams of one tenant as
asyncio protocols on uvloop when it is installed: no task or stream reader
per connection, and the arrival time is taken in ``data_received`` as the
bytes come, so the server is what is measured (against a bare server writing
to 5,000 sockets, the helper sees each event within the server's own write
loop). Then:

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
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from typing import Any, cast

import redis.asyncio as aredis

from ._model import BenchContext, Figure, figure
from .rest import _free_port, _one, _wait_ready

__all__ = ["run", "watchers_main"]

P99_GOAL_MS = 250.0
MEMORY_GOAL_KB = 50.0
IDLE_RATIO_GOAL = 1.5
#: Watchers per helper process (more are spread over several helpers).
WATCHERS_PER_HELPER = 2500
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


class _Watcher(asyncio.Protocol):
    """One watch stream read by a protocol callback: the arrival time is taken as the bytes come.

    No task and no stream reader per connection, so a helper process reads
    thousands of streams within a few milliseconds of the server's writes.
    """

    def __init__(self, request: bytes, fleet: _Fleet) -> None:
        self.request = request
        self.fleet = fleet
        self.buffer = b""
        self.started = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.WriteTransport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buffer = self.buffer + data
        if not self.started:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if buffer[9:12] != b"200":
                self.fleet.failed = f"watch stream refused: {buffer[:40]!r}"
            self.started = True
            self.fleet.opened += 1
            buffer = buffer[end + 4 :]
        end = 0
        received = self.fleet.received
        for match in _ID.finditer(buffer):
            revision = int(match.group(1))
            got = received.get(revision)
            if got is None:
                received[revision] = [now, 1]
            else:
                got[0] = now if now > got[0] else got[0]
                got[1] += 1
            self.fleet.check(revision)
            end = match.end()
        self.buffer = buffer[end:] if end else buffer[-64:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Fleet:
    """What one helper process's watchers received: revision -> [last arrival, count]."""

    def __init__(self) -> None:
        self.received: dict[int, list[float]] = {}
        self.opened = 0
        self.failed: str | None = None
        self.all_in = asyncio.Event()
        self._awaited: tuple[int, int] | None = None

    def awaited(self, revision: int, n: int) -> None:
        """Set ``all_in`` once ``n`` streams received ``revision``."""
        self._awaited = (revision, n)
        self.check(revision)

    def check(self, revision: int) -> None:
        """Note that ``revision`` arrived on one more stream."""
        wanted = self._awaited
        got = self.received.get(revision, [0.0, 0])[1]
        if wanted is not None and wanted[0] == revision and got >= wanted[1]:
            self.all_in.set()


async def _watchers(port: int, tenant: str, n: int) -> None:
    loop = asyncio.get_running_loop()
    fleet = _Fleet()
    request = (
        f"GET /api/v1/tenants/{tenant}/watch HTTP/1.1\r\nHost: fleet\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    transports = []
    for i in range(n):
        try:
            transport, _ = await loop.create_connection(
                lambda: _Watcher(request, fleet), "127.0.0.1", port
            )
        except OSError as exc:
            fleet.failed = f"connect: {exc}"
            break
        transports.append(transport)
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # within the listen backlog
    deadline = time.monotonic() + 60
    while fleet.opened < n:
        if fleet.failed or time.monotonic() > deadline:
            why = f": {fleet.failed}" if fleet.failed else ""
            print(json.dumps({"error": f"{fleet.opened} of {n} streams opened{why}"}), flush=True)
            return
        await asyncio.sleep(0.05)
    print("READY", flush=True)
    # The parent writes the last revision it made: wait (a while) until every
    # stream received it, then report.
    fleet.awaited(int(await loop.run_in_executor(None, sys.stdin.readline)), n)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.all_in.wait(), 30)
    report = {rev: {"last": at, "count": count} for rev, (at, count) in fleet.received.items()}
    print(json.dumps({"received": report}), flush=True)
    for transport in transports:
        transport.close()


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (as under uvicorn), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def watchers_main() -> None:
    """Entry point of a helper process: ``port tenant n`` in ``sys.argv``."""
    port, tenant, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        runner.run(_watchers(port, tenant, n))


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
    procs: list[asyncio.subprocess.Process] = []
    received: dict[int, dict[str, float]] = {}
    helpers = max(1, -(-n // WATCHERS_PER_HELPER))
    try:
        await _wait_ready(port, server)
        await _put(port, tenant, -1)
        await _one(port, f"GET /api/v1/tenants/{tenant} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
        await asyncio.sleep(0.5)
        rss_before = _rss_kb(server.pid)
        shares = [n // helpers + (1 if i < n % helpers else 0) for i in range(helpers)]
        for share in shares:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, "-c",
                    "from kvconf.bench.fleet import watchers_main; watchers_main()",
                    str(port), tenant, str(share),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                )
            )  # fmt: skip
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
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
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"%d\n" % max(sent))
            await proc.stdin.drain()
        for proc in procs:
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.readline(), 60)
            for revision, got in json.loads(out)["received"].items():
                merged = received.setdefault(int(revision), {"last": 0.0, "count": 0})
                merged["last"] = max(merged["last"], got["last"])
                merged["count"] += got["count"]
            await proc.wait()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        server.terminate()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
    latencies = []
    missing = 0
    for revision, start in sent.items():
        got = received.get(revision)
        if got is None or got["count"] < n:
            missing += n - (0 if got is None else int(got["count"]))
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
