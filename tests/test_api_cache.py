"""The API's read cache: reads served by watchers, and every case that must go to Redis."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from kvconf.api.cache import ReadCache
from kvconf.exceptions import KvconfError
from kvconf.store import Store, tenant_keys

from .api_helpers import ADMIN, client, make_token, running_app
from .redis_server import RedisServer

SECRET = "s3cret-value"


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


def key_url(tenant: str, key: str = "k", ns: str = "svc") -> str:
    return f"/api/v1/tenants/{tenant}/namespaces/{ns}/keys/{key}"


def cache_of(app: FastAPI) -> ReadCache:
    cache = app.state.cache
    assert isinstance(cache, ReadCache)
    return cache


async def until(check: Callable[[], object], timeout: float = 3.0) -> None:
    """Wait until ``check()`` is true (fails the test after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def cached(app: FastAPI, c: httpx.AsyncClient, tenant: str) -> None:
    """Read once through Redis and wait for the tenant's watcher to be usable."""
    assert (await c.get(key_url(tenant))).status_code == 200
    await until(lambda: cache_of(app).reader(tenant) is not None)


async def test_read_your_writes_in_the_same_app(app: FastAPI, tenant: str) -> None:
    async with client(app, ADMIN) as c:
        assert (await c.put(key_url(tenant), json={"value": 0})).status_code == 201
        await cached(app, c, tenant)
        for i in range(1, 30):
            r = await c.put(key_url(tenant), json={"value": i})
            assert r.status_code == 200
            r = await c.get(key_url(tenant))
            assert r.json()["value"] == i
            assert r.headers["etag"] == f'"{i + 1}"'
            ns = (await c.get(f"/api/v1/tenants/{tenant}/namespaces/svc")).json()
            assert ns["keys"]["k"]["value"] == i
        # Served from memory once the watcher caught up, identical to a Redis read.
        await until(lambda: cache_of(app).reader(tenant) is not None)
        fast = await c.get(key_url(tenant))
        slow = await c.get(key_url(tenant), params={"consistent": "true"})
        assert fast.content == slow.content
        assert fast.headers["etag"] == slow.headers["etag"]
        metrics = (await c.get("/metrics")).text
        assert re.search(r'kvconf_reads_total\{source="cache"\} [1-9]', metrics)
        assert re.search(r'kvconf_reads_total\{source="redis"\} [1-9]', metrics)


async def test_a_write_from_another_store_becomes_visible(
    app: FastAPI, tenant: str, make_store: Callable[..., Store]
) -> None:
    other = make_store()
    await other.set(tenant, "svc", "k", "one")
    async with client(app, ADMIN) as c:
        await cached(app, c, tenant)
        await other.set(tenant, "svc", "k", "two")
        await other.set(tenant, "svc", "new", 5)
        # A Redis read on request sees it at once.
        r = await c.get(key_url(tenant), headers={"Cache-Control": "no-cache"})
        assert r.json()["value"] == "two"
        deadline = time.monotonic() + 2.0
        while (await c.get(key_url(tenant))).json()["value"] != "two":
            assert time.monotonic() < deadline, "the cached read never saw the other write"
            await asyncio.sleep(0.01)
        r = await c.get(key_url(tenant, "new"))
        assert r.status_code == 200
        assert r.headers["etag"] == '"1"'
        assert r.json()["updated_by"] == "anonymous"


async def test_masking_and_not_found_from_the_cache(app: FastAPI, tenant: str) -> None:
    reader = await make_token(app, f"reader-{tenant}", {tenant: ["read"]})
    async with client(app, ADMIN) as admin, client(app, reader) as c:
        base = f"/api/v1/tenants/{tenant}/namespaces/svc"
        assert (await admin.post(base, json={"values": {"password": SECRET, "k": 1}})).is_success
        schema = {"keys": {"password": {"type": "str", "sensitive": True}}}
        assert (await admin.put(f"{base}/schema", json=schema)).is_success
        await cached(app, c, tenant)
        r = await c.get(key_url(tenant, "password"))
        assert r.json()["value"] == "***"
        assert SECRET not in r.text
        assert (await admin.get(key_url(tenant, "password"))).json()["value"] == SECRET
        ns = await c.get(base)
        assert ns.json()["keys"]["password"]["value"] == "***"
        assert ns.content == (await c.get(base, params={"consistent": "true"})).content
        # A key the cache lacks is a key 404; a bad name a 422, as from Redis.
        r = await c.get(key_url(tenant, "missing"))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "key_not_found"
        assert (await c.get(key_url(tenant, "bad name"))).status_code == 422
        assert (await c.get(key_url(tenant, "k", "bad name"))).status_code == 422
        # A sensitive flag set later is applied to cached reads too.
        schema = {"keys": {"k": {"type": "int", "sensitive": True}}}
        assert (await admin.put(f"{base}/schema", json=schema)).is_success
        assert (await c.get(key_url(tenant, "k"))).json()["value"] == "***"


async def test_unknown_tenants_start_no_watcher(app: FastAPI, tenant: str) -> None:
    async with client(app, ADMIN) as c:
        for i in range(20):
            r = await c.get(key_url(f"{tenant}-{i}"))
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "tenant_not_found"
        await asyncio.sleep(0.05)
        assert cache_of(app).tenants == []


async def test_deleted_tenant_is_not_served_from_the_cache(
    app: FastAPI, tenant: str, make_store: Callable[..., Store]
) -> None:
    async with client(app, ADMIN) as c:
        assert (await c.put(key_url(tenant), json={"value": 1})).is_success
        await cached(app, c, tenant)
        assert (await c.delete(f"/api/v1/tenants/{tenant}")).is_success
        r = await c.get(key_url(tenant))
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "tenant_not_found"
        assert (await c.post(f"/api/v1/tenants/{tenant}/undelete")).is_success
        await cached(app, c, tenant)
        # Soft-deleted elsewhere: no event, noticed by the cache's tenant check.
        await make_store().delete_tenant(tenant)
        deadline = time.monotonic() + 3.0
        while (await c.get(key_url(tenant))).status_code != 404:
            assert time.monotonic() < deadline, "a deleted tenant kept being served"
            await asyncio.sleep(0.02)


async def test_stale_watcher_falls_back_to_redis(
    app: FastAPI, tenant: str, make_store: Callable[..., Store]
) -> None:
    async with client(app, ADMIN) as c:
        assert (await c.put(key_url(tenant), json={"value": 1})).is_success
        await cached(app, c, tenant)
        watcher = cache_of(app).reader(tenant)
        assert watcher is not None
        watcher._engine.stale_reasons.add("test")  # as a failed check or lost pub/sub does
        assert cache_of(app).reader(tenant) is None
        # An edit behind kvconf's back: only Redis has it while the watcher is stale.
        redis = make_store().redis
        field = tenant_keys(tenant).ns("svc")
        raw = await redis.hget(field, "k")
        await redis.hset(field, "k", raw.replace(b'"value":1}', b'"value":42}'))
        assert (await c.get(key_url(tenant))).json()["value"] == 42
        ns = (await c.get(f"/api/v1/tenants/{tenant}/namespaces/svc")).json()
        assert ns["keys"]["k"]["value"] == 42
        watcher._engine.stale_reasons.discard("test")


async def test_more_tenants_than_the_cap(app: FastAPI, tenant: str) -> None:
    cache = cache_of(app)
    cache.max_tenants = 2
    cache.starts_per_second = 1000.0
    names = [f"{tenant}-{i}" for i in range(5)]
    async with client(app, ADMIN) as c:
        for i, name in enumerate(names):
            assert (await c.put(key_url(name), json={"value": i})).is_success
        for _ in range(3):
            for i, name in enumerate(names):
                r = await c.get(key_url(name))
                assert r.json()["value"] == i
                await asyncio.sleep(0.02)
                assert len(cache.tenants) <= 2
        await until(lambda: len(cache.tenants) == 2)


async def test_per_ai_routes_from_the_cache(app: FastAPI) -> None:
    async with client(app, ADMIN) as c:
        r = await c.put("/api/v1/config/4711", json={"stale_timeout": "30"})
        assert r.status_code == 200
        assert (await c.get("/api/v1/config/4711")).status_code == 200
        await until(lambda: cache_of(app).reader("default") is not None)
        for path in ("/api/v1/config/4711", "/api/v1/config/4711/stale_timeout"):
            fast = await c.get(path)
            slow = await c.get(path, params={"consistent": "true"})
            assert fast.status_code == 200
            assert fast.content == slow.content
        r = await c.put("/api/v1/config/4711/stale_timeout", json={"config_value": "31"})
        assert r.status_code == 200
        r = await c.get("/api/v1/config/4711/stale_timeout")
        assert r.json()["config_value"] == "31"
        r = await c.get("/api/v1/config/4711/nope")
        assert r.status_code == 404
        assert r.json()["success"] is False
        assert (await c.get("/api/v1/config/x1")).status_code == 422


async def test_the_cache_can_be_off(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app:
        assert app.state.cache is not None
    from kvconf import Settings
    from kvconf.api.app import create_app

    off = create_app(Settings(redis_url=backend_url), read_cache=False)
    async with off.router.lifespan_context(off), client(off) as c:
        assert off.state.cache is None
        assert (await c.put(key_url(tenant), json={"value": 1})).status_code == 201
        assert (await c.get(key_url(tenant))).json()["value"] == 1


async def test_cached_reads_never_go_back_in_time(
    app: FastAPI, tenant: str, make_store: Callable[..., Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher that lost an event (pub/sub is at-most-once) and has not noticed yet
    must not answer after a Redis read served a newer revision."""
    from kvconf._watch.engine import WatchEngine

    cache = cache_of(app)
    cache.check_interval = 30.0  # the revision check would repair the loss: not now
    other = make_store()
    await other.set(tenant, "svc", "k", 0)
    ns_url = f"/api/v1/tenants/{tenant}/namespaces/svc"
    async with client(app, ADMIN) as c:
        await cached(app, c, tenant)
        watcher = cache.reader(tenant)
        assert watcher is not None
        behind = watcher.revision
        on_event = WatchEngine.on_event

        def lossy(self: WatchEngine, event: object) -> None:
            if self is not watcher._engine:  # this watcher loses the event
                on_event(self, event)  # type: ignore[arg-type]

        monkeypatch.setattr(WatchEngine, "on_event", lossy)
        await other.set(tenant, "svc", "k", 1)  # written by another process
        await asyncio.sleep(0.05)
        assert watcher.revision == behind
        assert not watcher.stale  # nothing noticed the loss yet
        newest = (await c.get(ns_url, params={"consistent": "true"})).json()["revision"]
        assert newest == behind + 1
        for _ in range(3):
            r = await c.get(ns_url)
            assert r.json()["revision"] >= newest
            assert r.json()["keys"]["k"]["value"] == 1
            r = await c.get(key_url(tenant))
            assert r.json()["value"] == 1
        monkeypatch.setattr(WatchEngine, "on_event", on_event)
        await other.set(tenant, "svc", "k", 2)
        # the gap is replayed from the log: in step again, served from memory again
        await until(lambda: watcher.revision == behind + 2)
        assert cache.reader(tenant) is watcher
        assert (await c.get(key_url(tenant))).json()["value"] == 2


@pytest.mark.slow
async def test_a_frozen_redis_serves_cached_reads_stale_and_refuses_writes_promptly(
    redis_server: RedisServer, tenant: str
) -> None:
    async with running_app(redis_server.url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        assert app.state.settings.write_timeout < 1.0
        assert (await c.put(key_url(tenant), json={"value": "v1"})).status_code == 201
        await cached(app, c, tenant)
        watcher = cache_of(app).reader(tenant)
        assert watcher is not None
        reader = await make_token(app, f"r-{tenant}", {tenant: ["read"]})
        async with client(app, reader) as rc:
            assert (await rc.get(key_url(tenant))).status_code == 200
        token_seen = time.monotonic()
        redis_server.pause()
        try:
            started = time.monotonic()
            r = await c.put(key_url(tenant), json={"value": "v2"})
            took = time.monotonic() - started
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "unavailable"
            assert took < 1.5, took
            # The revision check noticed (a lost pub/sub ping alone may come first:
            # reads then still go to Redis, which is right when only pub/sub broke).
            await until(lambda: "check" in watcher.stale_reasons, timeout=6.0)
            for url in (key_url(tenant), f"/api/v1/tenants/{tenant}/namespaces/svc"):
                started = time.monotonic()
                r = await c.get(url)
                assert time.monotonic() - started < 0.5
                assert r.status_code == 200, r.text
                assert r.headers["x-kvconf-stale"] == "true"
            assert r.json()["keys"]["k"]["value"] == "v1"
            # a token known before the freeze still reads, past its 2 s cache
            await asyncio.sleep(max(0.0, token_seen + 2.2 - time.monotonic()))
            async with client(app, reader) as rc:
                for limit in (1.5, 0.5):  # the first one waits for the lookup's timeout
                    started = time.monotonic()
                    r = await rc.get(key_url(tenant))
                    assert time.monotonic() - started < limit
                    assert r.status_code == 200, r.text
                    assert r.headers["x-kvconf-stale"] == "true"
        finally:
            redis_server.resume()
        await until(lambda: not watcher.stale, timeout=10.0)
        r = await c.get(key_url(tenant))
        assert r.status_code == 200
        assert "x-kvconf-stale" not in r.headers


async def test_cached_reads_resume_after_the_tenant_epoch_changes(
    app: FastAPI, tenant: str, make_store: Callable[..., Store]
) -> None:
    """Recreated elsewhere (new epoch, revisions from 1 again): once the watcher has
    re-listed, key reads are served from memory again, with the new values."""
    cache = cache_of(app)
    other = make_store()
    for i in range(5):
        await other.set(tenant, "svc", "k", f"old-{i}")
    async with client(app, ADMIN) as c:
        await cached(app, c, tenant)
        watcher = cache.reader(tenant)
        assert watcher is not None
        old_epoch = watcher.epoch
        await other.delete_tenant(tenant, hard=True)
        await other.set(tenant, "svc", "k", "new")
        await until(lambda: watcher.epoch != old_epoch and not watcher.stale, timeout=6.0)
        r = await c.get(key_url(tenant))
        assert r.json()["value"] == "new"
        await until(lambda: cache.reader(tenant) is not None, timeout=6.0)
        assert (await c.get(key_url(tenant))).json()["value"] == "new"


@pytest.mark.slow
async def test_cached_reads_stay_monotonic_under_real_faults(redis_server: RedisServer) -> None:
    """Pub/sub kills, normal-connection kills and a freeze while another process writes:
    no read ever shows a revision older than one this worker already served."""
    tenant = "monotonic"
    async with running_app(redis_server.url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        writer = Store(redis_server.url, environ={})
        await writer.set(tenant, "svc", "k", 0)
        await cached(app, c, tenant)
        stop = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    await writer.set(tenant, "svc", "k", n)
                except KvconfError:
                    await asyncio.sleep(0.01)  # a kill or the freeze: try again

        async def faults() -> None:
            with redis_server.client() as admin:
                for round_ in range(6):
                    await asyncio.sleep(0.3)
                    admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
                    await asyncio.sleep(0.2)
                    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
                    if round_ == 3:
                        redis_server.pause()
                        await asyncio.sleep(0.4)
                        redis_server.resume()
            stop.set()

        served: list[int] = []
        writing = asyncio.ensure_future(write())
        faulting = asyncio.ensure_future(faults())
        try:
            while not stop.is_set():
                r = await c.get(f"/api/v1/tenants/{tenant}/namespaces/svc")
                if r.status_code == 200:
                    served.append(r.json()["revision"])
                await asyncio.sleep(0.005)
        finally:
            stop.set()
            await asyncio.gather(writing, faulting, return_exceptions=True)
            await writer.aclose()
        assert len(served) > 50
        backwards = [(a, b) for a, b in itertools.pairwise(served) if b < a]
        assert backwards == []
