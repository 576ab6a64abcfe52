"""The watcher under Redis faults, on a private real redis-server per test.

Every scenario runs a writer that commits change sets ``{a: i, b: i}`` while
the fault happens, a reader that checks it never sees ``a != b`` (half a
change set), and ends with the watcher's cache equal to the store's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kvconf import Settings, Store, Unavailable
from kvconf.watcher import Watcher

from .redis_server import RedisServer
from .test_watcher import Recorder, converge, until

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


class Scenario:
    """A writer, a torn-read checker and a recorder around one watcher."""

    def __init__(self, store: Store, watcher: Watcher, tenant: str) -> None:
        self.store, self.watcher, self.tenant = store, watcher, tenant
        self.recorder = Recorder(watcher)
        self.torn: list[tuple[object, object]] = []
        self.written = 0
        self.errors = 0
        watcher.on_change(lambda _c: self._check())

    def _check(self) -> None:
        a, b = self.watcher.get("s", "a"), self.watcher.get("s", "b")
        if a != b:
            self.torn.append((a, b))

    async def write(self, count: int, pause: float = 0.005) -> None:
        for _ in range(count):
            self.written += 1
            i = self.written
            while True:
                try:
                    await self.store.set_many(self.tenant, "s", {"a": i, "b": i, f"k{i % 7}": i})
                    break
                except Unavailable:
                    self.errors += 1
                    await asyncio.sleep(0.05)
            await asyncio.sleep(pause)

    async def read_forever(self) -> None:
        while True:
            self._check()
            await asyncio.sleep(0.001)

    async def finish(self, timeout: float = 20.0) -> None:
        await converge(self.watcher, self.store, self.tenant, timeout=timeout)
        assert self.torn == []
        assert self.recorder.problems == []
        assert self.watcher.get("s", "a") == self.written


@contextlib.asynccontextmanager
async def scenario(
    server: RedisServer, tenant: str, **watcher_options: object
) -> AsyncIterator[Scenario]:
    options: dict[str, object] = {"environ": {}, "check_interval": 0.3, "timeout": 1.0}
    options.update(watcher_options)
    async with (
        Store(settings=Settings(redis_url=server.url)) as store,
        Watcher(tenant, server.url, **options) as watcher,  # type: ignore[arg-type]
    ):
        sc = Scenario(store, watcher, tenant)
        reader = asyncio.create_task(sc.read_forever())
        try:
            yield sc
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


async def during(writes: Awaitable[None], fault: Callable[[], Awaitable[None]]) -> None:
    """Run ``fault`` while the writer is busy."""
    task = asyncio.ensure_future(writes)
    await asyncio.sleep(0.1)
    await fault()
    await task


async def test_redis_restart_during_writes(redis_server: RedisServer, tenant: str) -> None:
    async with scenario(redis_server, tenant) as sc:
        await sc.write(20)
        first_epoch = sc.watcher.epoch
        # No persistence: the restart loses everything and the revision restarts (new epoch).
        await during(sc.write(60), lambda: asyncio.to_thread(redis_server.restart))
        await sc.finish()
        assert sc.watcher.epoch != first_epoch
        assert any(r.reason in ("epoch", "resubscribed") for r in sc.recorder.resyncs)
        assert not sc.watcher.stale


async def test_client_kill_pubsub_during_writes(redis_server: RedisServer, tenant: str) -> None:
    async with scenario(redis_server, tenant) as sc:

        async def kill() -> None:
            for _ in range(3):
                await sc.store.redis.client_kill_filter(_type="pubsub")
                await asyncio.sleep(0.1)

        subscriptions = sc.watcher._engine.subscriptions
        await during(sc.write(80, pause=0.003), kill)
        await sc.finish()
        assert sc.watcher._engine.subscriptions > subscriptions
        assert [r.reason for r in sc.recorder.resyncs] == []
        revisions = [c.revision for c in sc.recorder.changes]
        assert revisions == list(range(revisions[0], revisions[0] + len(revisions)))


async def test_client_pause_is_noticed_and_survived(redis_server: RedisServer, tenant: str):
    async with scenario(redis_server, tenant) as sc:
        await sc.write(5)
        admin = redis_server.client()
        try:
            admin.execute_command("CLIENT", "PAUSE", "2500", "ALL")
            started = time.monotonic()
            writer = asyncio.create_task(sc.write(10))
            await until(lambda: sc.watcher.stale, timeout=2.5)
            assert time.monotonic() - started < 2.5
            await writer
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
            admin.close()
        await sc.finish()
        await until(lambda: not sc.watcher.stale, timeout=5)


async def test_frozen_server_is_noticed_within_seconds(redis_server: RedisServer, tenant: str):
    async with scenario(redis_server, tenant, check_interval=0.5, timeout=1.0) as sc:
        await sc.write(5)
        synced = sc.watcher.last_synced_at
        redis_server.pause()
        try:
            started = time.monotonic()
            await until(lambda: sc.watcher.stale, timeout=4)
            noticed = time.monotonic() - started
            assert sc.watcher.get("s", "a") == 5  # last known values are still served
        finally:
            redis_server.resume()
        assert noticed < 3.0
        await sc.write(5)
        await sc.finish()
        await until(lambda: not sc.watcher.stale, timeout=5)
        assert sc.watcher.last_synced_at is not None
        assert synced is not None
        assert sc.watcher.last_synced_at > synced


async def test_server_down_then_back_with_backoff(redis_server: RedisServer, tenant: str):
    async with scenario(redis_server, tenant) as sc:
        await sc.write(5)
        redis_server.kill()
        await until(lambda: sc.watcher.stale, timeout=3)
        assert sc.watcher.get("s", "a") == 5
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis_server.start)
        await sc.write(5)
        await sc.finish()
        await until(lambda: not sc.watcher.stale, timeout=5)
