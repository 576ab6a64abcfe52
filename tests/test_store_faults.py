"""The store under Redis faults (real redis-server the test may kill)."""

from __future__ import annotations

import asyncio

import pytest

from kvconf import Settings, Store, Unavailable
from kvconf._redis.names import tenant_from_key
from kvconf._redis.scripts import script_source

from .redis_server import RedisServer


async def test_redis_down_is_unavailable_and_recovers(redis_server: RedisServer) -> None:
    store = Store(settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set("t", "ns", "k", 1)
        redis_server.kill()
        with pytest.raises(Unavailable):
            await store.get("t", "ns", "k")
        with pytest.raises(Unavailable):
            await store.set("t", "ns", "k", 2)
        redis_server.start()
        # No persistence configured: the data is gone, and the store says so
        # with a typed error rather than a crash; writes work again.
        result = await store.set("t", "ns", "k", 3)
        assert result.revision == 1
        assert (await store.get("t", "ns", "k")).value == 3
    finally:
        await store.aclose()


async def test_a_write_after_a_restart_reconnects(redis_server: RedisServer) -> None:
    # The write runner holds a connection between calls; the server closing
    # it must not cost the next write an error (nor the script's reload).
    store = Store(settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set("t", "ns", "k", 1)
        redis_server.kill()
        redis_server.start()
        await asyncio.sleep(0.05)  # idle for a moment, as a service would be
        result = await store.set("t", "ns", "k", 2)
        assert (result.revision, result.versions) == (1, {"k": 1})  # a new, empty server
        results = await asyncio.gather(*(store.set("t", "ns", f"k{i}", i) for i in range(20)))
        assert sorted(r.revision for r in results) == list(range(2, 22))
        redis_server.kill()
        redis_server.start()
        await asyncio.sleep(0.05)
        # Reads go through the client's pool: it must not lend a closed connection.
        assert [await store.tenants() for _ in range(3)] == [[], [], []]
        assert (await store.set("t", "ns", "k", 3)).revision == 1
    finally:
        await store.aclose()


async def test_write_refused_under_maxmemory_changes_nothing(redis_server: RedisServer) -> None:
    store = Store(settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set_many("t", "ns", {"a": 1, "b": 2})
        before = await store.read_state("t")
        with redis_server.client() as admin:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", 1)
        with pytest.raises(Unavailable):
            await store.set_many("t", "ns", {"a": 10, "b": 20, "c": 30})
        with redis_server.client() as admin:
            admin.config_set("maxmemory", 0)
        assert await store.read_state("t") == before
        assert await store.changes_since("t", before.revision) == []
    finally:
        await store.aclose()


async def test_concurrent_writes_fail_rather_than_hang_when_scripts_cannot_load(
    redis_server: RedisServer,
) -> None:
    # A user that may run scripts by SHA but not load them: after SCRIPT FLUSH,
    # EVALSHA answers NOSCRIPT and reloading fails, for the first caller and
    # for the pipelined batch queued behind it alike.
    with redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "kv", "on", ">pw", "~*", "&*", "+@all",
                              "-script|load")  # fmt: skip
        for name in ("write", "read_schemas"):
            admin.script_load(script_source(name))
    url = f"redis://kv:pw@127.0.0.1:{redis_server.port}/0"
    store = Store(settings=Settings(redis_url=url), environ={})
    try:
        await store.set("t", "ns", "warm", 0)  # scripts found by SHA; schemas cached
        with redis_server.client() as admin:
            admin.script_flush()
        results = await asyncio.wait_for(
            asyncio.gather(
                *(store.set("t", "ns", f"k{i}", i) for i in range(12)), return_exceptions=True
            ),
            timeout=10,
        )
        assert all(isinstance(r, Unavailable) for r in results), results
        assert await store.revision("t") == 1  # nothing was written
    finally:
        await store.aclose()


def _squeeze(server: RedisServer) -> None:
    """Set ``maxmemory`` under what the server uses: every write command is refused."""
    with server.client() as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", str(max(used - 64 * 1024, 1024)))


def _relax(server: RedisServer) -> None:
    with server.client() as admin:
        admin.config_set("maxmemory", "0")


@pytest.mark.slow
async def test_a_write_refused_for_memory_is_not_applied(redis_server: RedisServer) -> None:
    store = Store(settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set("old", "ns", "k", 1)
        _squeeze(redis_server)
        with pytest.raises(Unavailable):
            await store.set("fresh", "ns", "k", "x" * 1000)  # a first write: a new tenant
        with pytest.raises(Unavailable):
            await store.set_many("old", "ns", {f"k{i}": "y" * 1000 for i in range(50)})
        _relax(redis_server)
        with redis_server.client() as admin:
            assert admin.keys("kvconf:{fresh}:*") == []
        assert await store.tenants() == ["old"]
        assert await store.revision("old") == 1
        assert list(await store.get_namespace("old", "ns")) == ["k"]
    finally:
        _relax(redis_server)
        await store.aclose()


@pytest.mark.slow
async def test_writes_crossing_maxmemory_are_whole_and_listed(redis_server: RedisServer) -> None:
    # Memory just above what is used: each first write of a new tenant may
    # cross the limit midway. Each is applied whole and listed, or not at all.
    store = Store(settings=Settings(redis_url=redis_server.url), environ={})
    try:
        await store.set("warm", "ns", "k", 1)
        with redis_server.client() as admin:
            used = int(admin.info("memory")["used_memory"])
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", str(used + 256 * 1024))
        refused = 0
        for i in range(40):
            tenant = f"fresh-{i}"
            try:
                await store.set_many(tenant, "ns", {"a": "x" * 20_000, "b": "y" * 20_000})
            except Unavailable:
                refused += 1
            with redis_server.client() as admin:
                keys = admin.keys(f"kvconf:{{{tenant}}}:*")
                listed = admin.sismember("kvconf:tenants", tenant)
            if keys:
                assert listed, f"{tenant} holds data but is not listed"
                assert len(await store.get_namespace(tenant, "ns")) == 2  # whole
            if refused >= 3:
                break
        assert refused >= 3
        _relax(redis_server)
        with redis_server.client() as admin:
            keys = [k.decode() for k in admin.keys("kvconf:{fresh-*")]
        holding = {tenant_from_key(k) for k in keys}
        assert holding <= set(await store.tenants())
    finally:
        _relax(redis_server)
        await store.aclose()


async def test_unreachable_redis_is_unavailable_from_every_read() -> None:
    from kvconf import Store, Unavailable

    from .redis_server import free_port

    store = Store(f"redis://127.0.0.1:{free_port()}/0")
    try:
        for call in (
            store.specs("acme", "ns"),
            store.schemas("acme"),
            store.get("acme", "ns", "k"),
            store.history("acme", "ns", "k"),
            store.explain("acme", "ns"),
        ):
            with pytest.raises(Unavailable):
                await call
    finally:
        await store.aclose()
