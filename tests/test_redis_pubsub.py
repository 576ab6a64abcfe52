"""The hub's pub/sub session on a real redis-server: faults of its own, and the fallback."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from kvconf import Store
from kvconf._redis import pubsub as conns
from kvconf.watcher import Watcher

from .redis_server import RedisServer
from .test_watcher import converge, until

pytestmark = pytest.mark.real_redis


async def test_a_refused_command_recycles_the_connection(
    shared_redis: RedisServer, tenant: str, caplog: pytest.LogCaptureFixture
):
    url = shared_redis.url
    async with Store(url) as store, Watcher(tenant, url, environ={}) as watcher:
        await store.set(tenant, "ns", "k", 1)
        await converge(watcher, store, tenant)
        hub, session = watcher._engine.hub, watcher._engine.hub._session  # type: ignore[union-attr]
        assert hub is not None
        assert session is not None
        assert hub.sockname is not None
        first = hub.sockname
        with caplog.at_level(logging.WARNING, logger="kvconf.watcher"):
            await session.send("SSUBSCRIBE")  # wrong number of arguments: an error reply
            await until(lambda: hub.sockname not in (None, first) and hub.connected, timeout=5)
        assert "refused a pub/sub command" in caplog.text
        await store.set(tenant, "ns", "k", 2)
        await converge(watcher, store, tenant)
        assert watcher.get("ns", "k") == 2


async def test_a_listener_fault_reconnects_and_the_change_is_not_lost(
    shared_redis: RedisServer, tenant: str, caplog: pytest.LogCaptureFixture
):
    url = shared_redis.url
    async with Store(url) as store, Watcher(tenant, url, environ={}) as watcher:
        await store.set(tenant, "ns", "k", 1)
        await converge(watcher, store, tenant)
        failed: list[int] = []
        engine = watcher._engine

        class Faulty(type(engine)):  # type: ignore[misc]
            def on_event(self, event: Any) -> None:
                if not failed:
                    failed.append(event.revision)
                    raise RuntimeError("a bug in a listener")
                super().on_event(event)

        engine.__class__ = Faulty
        with caplog.at_level(logging.WARNING, logger="kvconf.watcher"):
            result = await store.set(tenant, "ns", "k", 2)
            # The event that hit the fault is replayed from the log after the reconnect.
            assert await watcher.wait_for_revision(result.revision, timeout=10)
        assert failed == [result.revision]
        assert "could not be handled" in caplog.text
        assert watcher.get("ns", "k") == 2
        await converge(watcher, store, tenant)


async def test_without_the_socket_the_hub_reads_through_redis_py(
    shared_redis: RedisServer, tenant: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(conns, "_take_streams", lambda conn: None)
    url = shared_redis.url
    async with Store(url) as store, Watcher(tenant, url, environ={}) as watcher:
        session = watcher._engine.hub._session  # type: ignore[union-attr]
        assert isinstance(session, conns._SocketSession)
        assert session._fallback is not None
        seen: list[int] = []
        watcher.on_change(lambda change: seen.append(change.revision))
        result = await store.set(tenant, "ns", "k", "v")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert seen == [result.revision]
        assert watcher._engine.hub.sockname is not None  # type: ignore[union-attr]
        await converge(watcher, store, tenant)


async def test_a_watcher_over_a_unix_socket(tmp_path: Path, tenant: str) -> None:
    path = tmp_path / "redis.sock"
    server = RedisServer(tmp_path / "redis", "--unixsocket", str(path), "--unixsocketperm", "700")
    server.start()
    url = f"unix://{path}"
    try:
        async with Store(url) as store, Watcher(tenant, url, environ={}) as watcher:
            assert isinstance(watcher._engine.hub._session, conns._SocketSession)  # type: ignore[union-attr]
            result = await store.set(tenant, "ns", "k", "v")
            assert await watcher.wait_for_revision(result.revision, timeout=5)
            assert watcher.get("ns", "k") == "v"
            await converge(watcher, store, tenant)
    finally:
        server.stop()
