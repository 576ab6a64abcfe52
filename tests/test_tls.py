"""Store and Watcher over TLS (``rediss://``) on a real redis-server.

The watcher's pub/sub socket is opened by redis-py (the TLS handshake), then
taken over by kvconf's protocol: here that takeover runs on an SSL transport.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import redis

from kvconf import Store
from kvconf._redis import pubsub as conns
from kvconf.watcher import Watcher

from .redis_server import REQUIRE_ENV, free_port, redis_binary
from .test_watcher import converge, until

pytestmark = pytest.mark.real_redis


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail when real Redis is required (the policy of redis_binary())."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} and {REQUIRE_ENV} is set")
    pytest.skip(reason)


def make_certs(d: Path) -> None:
    """A throwaway CA (ca.pem) and a certificate it signed for IP 127.0.0.1."""
    if shutil.which("openssl") is None:
        unavailable("openssl not installed")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for cmd in (
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=kvconf-test-ca"
        " -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
        "x509 -req -days 1 -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
        f" -extfile {ext} -out server.pem",
    ):
        subprocess.run(["openssl", *cmd.split()], cwd=d, check=True, capture_output=True)


@pytest.fixture
def tls_url(tmp_path: Path) -> Iterator[str]:
    """The ``rediss://`` URL of a private TLS-only redis-server (verified by our CA)."""
    binary = redis_binary()
    make_certs(tmp_path)
    port, out = free_port(), tmp_path / "redis.out"
    cmd = [
        binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(tmp_path / "server.pem"),
        "--tls-key-file", str(tmp_path / "server.key"),
        "--tls-ca-cert-file", str(tmp_path / "ca.pem"), "--tls-auth-clients", "no",
        "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
    ]  # fmt: skip
    with out.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={tmp_path / 'ca.pem'}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=5) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    log = out.read_text(errors="replace")[-2000:]
                    if "tls-port" in log and "Bad directive" in log:
                        unavailable("redis-server was built without TLS support")
                    raise RuntimeError(f"TLS redis-server did not start: {log}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("TLS redis-server did not accept connections") from None
                time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def assert_tls_socket_session(watcher: Watcher) -> None:
    """The hub reads its own socket (the takeover worked): no redis-py fallback."""
    hub = watcher._engine.hub
    assert hub is not None
    session = hub._session
    assert isinstance(session, conns._SocketSession)
    assert session._fallback is None
    assert session._transport is not None
    assert session._transport.get_extra_info("ssl_object") is not None


async def test_store_and_watcher_over_tls(tls_url: str, tenant: str) -> None:
    # The server's certificate is verified: without our CA the handshake is refused.
    untrusted = tls_url.split("?")[0]
    with (
        pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"),
        redis.Redis.from_url(untrusted, socket_timeout=5) as client,
    ):
        client.ping()
    async with Store(tls_url) as store:
        await store.set(tenant, "ns", "k", "initial")
        assert (await store.get(tenant, "ns", "k")).value == "initial"
        async with Watcher(tenant, tls_url, environ={}) as watcher:
            assert watcher.get("ns", "k") == "initial"
            assert_tls_socket_session(watcher)
            result = await store.set(tenant, "ns", "k", "changed")
            assert await watcher.wait_for_revision(result.revision, timeout=5)
            assert watcher.get("ns", "k") == "changed"
            assert not watcher.stale
            await converge(watcher, store, tenant)


async def test_watcher_reconnects_over_tls_after_client_kill(tls_url: str, tenant: str) -> None:
    async with Store(tls_url) as store, Watcher(tenant, tls_url, environ={}) as watcher:
        await store.set(tenant, "ns", "k", 1)
        await converge(watcher, store, tenant)
        hub = watcher._engine.hub
        assert hub is not None
        first = hub.sockname
        assert first is not None
        with redis.Redis.from_url(tls_url, socket_timeout=5) as admin:
            assert int(admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")) >= 1
        await until(lambda: hub.sockname not in (None, first) and hub.connected, timeout=5)
        assert_tls_socket_session(watcher)
        result = await store.set(tenant, "ns", "k", 2)
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert watcher.get("ns", "k") == 2
        assert not watcher.stale
        await converge(watcher, store, tenant)
