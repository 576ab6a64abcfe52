"""A real ``kvconf serve`` subprocess for end-to-end tests (HTTP Store, CLI through a server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis

from kvconf._redis.names import TOKEN_NAMES_KEY, TOKENS_KEY, TOKENS_USED_KEY

from .redis_server import free_port

__all__ = ["ROOT", "forget_tokens", "serve_env", "serving", "wait_ready"]

ROOT = Path(__file__).resolve().parent.parent


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until the ``kvconf serve`` at ``base`` answers ``/healthz`` (fail if it exits)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.communicate()[0] if proc.stdout is not None else b""
            raise AssertionError(f"kvconf serve exited {proc.returncode}: {out.decode()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "kvconf serve did not become ready"
        time.sleep(0.1)


@contextmanager
def serving(
    data: Path, redis_url: str | None, admin: str | None, **env: str
) -> Iterator[tuple[str, Any]]:
    """``kvconf serve`` on a free loopback port (``admin`` None: no admin token;
    ``env``: more variables, e.g. ``KVCONF_LOG_LIMIT``); yields its base URL and process."""
    port = free_port()
    args = ["--port", str(port), "--data-dir", str(data)]
    if redis_url is not None:
        args += ["--redis-url", redis_url]
    cmd = [sys.executable, "-c", "from kvconf.cli import main; main()", "serve", *args]
    proc = subprocess.Popen(
        cmd,
        env=serve_env(**({"KVCONF_ADMIN_TOKEN": admin} if admin else {}), **env),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            out = proc.communicate(timeout=5)[0].decode()
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode()
        assert "Traceback" not in out, out


def forget_tokens(url: str) -> None:
    """Remove every API token from the server at ``url`` (the shared test server)."""
    with redis.Redis.from_url(url) as client:
        client.delete(TOKENS_KEY, TOKEN_NAMES_KEY, TOKENS_USED_KEY)
