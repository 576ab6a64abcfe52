"""Measure the embedded store's durability window under ``kill -9``.

Preloads one tenant with ``--keys`` keys of about 1 KB, starts ``kvconf serve``
on that data dir, PUTs new keys into the same tenant and namespace as fast as
acknowledgements come, ``kill -9``s the server, reopens the data dir and
reports the acknowledged writes that were lost, the oldest by its age at the
kill. The README promises that nothing acknowledged more than 1 s before a
crash is lost.

    python3 -m tests.durability_window --keys 100000 --seconds 6

The slow test ``tests/test_embedded.py::test_kill_9_window_holds_for_a_large_tenant``
runs it at a size that keeps it quick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

import kvconf
from kvconf import Settings
from kvconf._snapshot.embedded import close_embedded, open_embedded_store, persister_of

TENANT = "acme"
NAMESPACE = "big"
PAD = "x" * 1000


@dataclass
class Window:
    """The outcome of one run."""

    keys: int
    acked: int
    lost: int
    oldest_lost_age: float  # seconds before the kill; 0.0 when nothing was lost
    load_seconds: float


async def preload(data_dir: Path, keys: int) -> None:
    """Fill the tenant with ``keys`` keys of ~1 KB, then close the data dir."""
    store = await open_embedded_store(Settings(data_dir=data_dir), server_name=uuid.uuid4().hex)
    persister = persister_of(store)
    assert persister is not None
    persister.sync = False  # one flush at the end instead of one per batch
    try:
        for at in range(0, keys, 1000):
            batch = {f"pre{i}": PAD for i in range(at, min(keys, at + 1000))}
            await store.set_many(TENANT, NAMESPACE, batch)
    finally:
        await store.aclose()
        await close_embedded(data_dir)


async def present(data_dir: Path) -> set[str]:
    """The keys of the namespace after a restart."""
    store = await open_embedded_store(Settings(data_dir=data_dir), server_name=uuid.uuid4().hex)
    try:
        return set(await store.get_namespace(TENANT, NAMESPACE))
    finally:
        await store.aclose()
        await close_embedded(data_dir)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    env["KVCONF_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = str(Path(kvconf.__file__).resolve().parents[1])  # this kvconf
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvconf", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # a big data dir loads slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("kvconf serve exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("kvconf serve did not come up")


def _writer(base: str, acked: list[tuple[str, float]], stop: threading.Event, n: int) -> None:
    url = f"{base}/api/v1/tenants/{TENANT}/namespaces/{NAMESPACE}/keys"
    with httpx.Client(timeout=30) as client:
        i = 0
        while not stop.is_set():
            key = f"w{n}-{i}"
            try:
                r = client.put(f"{url}/{key}", json={"value": PAD})
            except httpx.HTTPError:
                return  # the server was killed
            if r.status_code in (200, 201):
                acked.append((key, time.monotonic()))
            i += 1


def measure(
    keys: int, seconds: float = 4.0, writers: int = 2, workdir: Path | None = None
) -> Window:
    """One run: preload, write for ``seconds``, ``kill -9``, reopen, compare."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        data_dir = Path(tmp) / "data"
        started = time.monotonic()
        asyncio.run(preload(data_dir, keys))
        load_seconds = time.monotonic() - started
        port = _free_port()
        proc = _serve(data_dir, port)
        acked: list[tuple[str, float]] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=_writer, args=(f"http://127.0.0.1:{port}", acked, stop, n))
            for n in range(writers)
        ]
        try:
            for thread in threads:
                thread.start()
            time.sleep(seconds)
            proc.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait()
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for thread in threads:
                thread.join()
        done = [(k, at) for k, at in acked if at <= killed_at]
        found = asyncio.run(present(data_dir))
        lost = [(k, at) for k, at in done if k not in found]
        oldest = max((killed_at - at for _, at in lost), default=0.0)
        return Window(keys, len(done), len(lost), oldest, load_seconds)


def main() -> None:
    """Command line: print one line per size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 1000, 100_000])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--writers", type=int, default=2)
    args = parser.parse_args()
    for keys in args.keys:
        w = measure(keys, args.seconds, args.writers)
        print(
            f"keys={w.keys:>7} acked={w.acked:>6} lost={w.lost:>5} "
            f"oldest_lost_age={w.oldest_lost_age:.2f}s (preload {w.load_seconds:.1f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
