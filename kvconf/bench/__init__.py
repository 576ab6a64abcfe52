"""``kvconf bench``: figures as ratios against baselines measured in the same run.

Each section is a module ``kvconf.bench.<name>`` with
``async def run(ctx: BenchContext) -> list[Figure]``; the runner starts a
private redis-server on a free loopback port unless given a URL.
"""

from __future__ import annotations

import importlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ._model import BenchContext, Figure

__all__ = ["SECTIONS", "BenchContext", "Figure", "private_redis", "run_sections"]

SECTIONS = ("store", "watch", "rest", "snapshot", "fleet")


@contextmanager
def private_redis() -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("kvconf bench needs redis-server (or pass --redis-url)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="kvconf-bench-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            import redis

            deadline = time.monotonic() + 10
            while True:
                try:
                    redis.Redis(port=port).ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("redis-server for the benchmark did not start") from None
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


async def run_sections(ctx: BenchContext, names: list[str]) -> dict[str, list[Figure]]:
    """Run the named sections in order; a section not built yet is skipped."""
    results: dict[str, list[Figure]] = {}
    for name in names:
        try:
            module = importlib.import_module(f"kvconf.bench.{name}")
        except ModuleNotFoundError:
            continue
        ctx.log(f"[bold]{name}[/bold]")
        results[name] = await module.run(ctx)
    return results
