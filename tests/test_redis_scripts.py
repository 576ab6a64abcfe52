"""``kvconf._redis.scripts``: RESP packing as redis-py's; batched commands on a real server."""

from __future__ import annotations

import asyncio
import resource
import socket
import uuid
from typing import Any

import pytest
import redis.asyncio as aredis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from kvconf import Store
from kvconf._redis.scripts import Scripts, pack_command

from .redis_server import RedisServer


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "kvconf:{t}:ns:svc", "kvconf:{t}:hist:svc", b'"actor"', b""),
        ("SET", "clé", "värde ✓"),
        ("ZADD", "z", 0, "m", -7, 1.5, 1e300),
        ("SET", "big", b"x" * 200_000),
    ],
)
def test_pack_is_what_redis_py_sends(args: tuple[Any, ...]) -> None:
    assert pack_command(args) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, ["list"], 3j])
def test_pack_refuses_what_scripts_never_take(bad: object) -> None:
    with pytest.raises(TypeError, match="script argument"):
        pack_command(("SET", "k", bad))


async def test_batched_commands_share_round_trips_and_fail_alone(shared_redis: RedisServer) -> None:
    client = aredis.Redis.from_url(shared_redis.url)
    scripts = Scripts(client)
    prefix = f"bc-{uuid.uuid4().hex[:8]}"
    try:
        await client.hset(f"{prefix}:h", mapping={f"f{i}": i for i in range(50)})
        await client.rpush(f"{prefix}:list", "x")
        calls = [scripts.batched_command("HGET", f"{prefix}:h", f"f{i}") for i in range(50)]
        calls.insert(25, scripts.batched_command("HGET", f"{prefix}:list", "f"))
        results = await asyncio.gather(*calls, return_exceptions=True)
        wrong = results.pop(25)
        assert isinstance(wrong, ResponseError)
        assert "WRONGTYPE" in str(wrong)
        assert results == [str(i).encode() for i in range(50)]
        # The caller whose round trip is in flight is cancelled: the queued
        # calls go out on the runner's connection all the same.
        tasks = [
            asyncio.ensure_future(scripts.batched_command("HGET", f"{prefix}:h", f"f{i}"))
            for i in range(20)
        ]
        await asyncio.sleep(0)
        tasks[0].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[0], asyncio.CancelledError)
        assert done[1:] == [str(i).encode() for i in range(1, 20)]
        assert await scripts.batched_command("HGET", f"{prefix}:h", "f7") == b"7"
        assert await scripts.batched_command("HGET", f"{prefix}:h", "nope") is None
    finally:
        await scripts.aclose()
        await client.delete(f"{prefix}:h", f"{prefix}:list")
        await client.aclose()


async def test_a_held_connection_past_descriptor_1023_is_checked(shared_redis: RedisServer) -> None:
    # select() refuses descriptors past FD_SETSIZE; the check before each
    # write must not, or a busy service's writes would fail.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard) < 1200:
        pytest.skip("cannot open 1,100 descriptors here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [socket.socket() for _ in range(1100)]
    client = aredis.Redis.from_url(shared_redis.url)
    scripts = Scripts(client)
    try:
        assert await scripts.batched_command("PING") == b"PONG"
        held = scripts._commands._conn  # type: ignore[union-attr]
        assert held._writer.get_extra_info("socket").fileno() > 1023
        assert await scripts.batched_command("PING") == b"PONG"  # checked, then reused
        assert scripts._commands._conn is held  # type: ignore[union-attr]
    finally:
        await scripts.aclose()
        await client.aclose()
        for sock in filler:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_small_pool_is_borrowed_per_round_trip_not_held(
    shared_redis: RedisServer, tenant: str
) -> None:
    store = Store(f"{shared_redis.url}?max_connections=2")
    try:
        await store.set(tenant, "ns", "k", 1)
        assert (await store.get(tenant, "ns", "k")).value == 1
        # Neither runner kept a connection: the rest of the store still has the pool.
        assert await store.get_namespace(tenant, "ns") != {}
        assert tenant in await store.tenants()
        writes = [store.set(tenant, "ns", f"k{i}", i) for i in range(10)]
        reads = [store.get(tenant, "ns", "k") for _ in range(10)]
        done = await asyncio.gather(*writes, *reads)
        assert sorted(r.revision for r in done[:10]) == list(range(2, 12))  # type: ignore[union-attr]
    finally:
        await store.aclose()


async def test_a_closed_runner_refuses_calls_and_gives_its_connection_back(
    shared_redis: RedisServer,
) -> None:
    client = aredis.Redis.from_url(shared_redis.url)
    scripts = Scripts(client)
    try:
        assert await scripts.batched_command("PING") == b"PONG"
        runner = scripts._commands
        assert runner is not None
        held = runner._conn
        assert held is not None
        await scripts.aclose()
        assert runner._conn is None
        with pytest.raises(RedisConnectionError, match="closed"):
            await scripts.batched_command("PING")
        assert await client.ping()  # the pool lends the connection again
    finally:
        await client.aclose()
