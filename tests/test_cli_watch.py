"""``kvconf watch`` and several watcher processes following one tenant (real Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kvconf import KeySpec, Schema, Settings, Store

from .redis_server import RedisServer
from .test_watcher import store_values

pytestmark = pytest.mark.real_redis

CLI = [sys.executable, "-c", "from kvconf.cli import main; main()"]

CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from kvconf.watcher import Watcher

    async def main(url, tenant):
        async with Watcher(tenant, url, environ={}, check_interval=0.3) as watcher:
            print(json.dumps({"ready": watcher.revision}), flush=True)
            while watcher.get("done", "flag") is not True:
                await asyncio.sleep(0.02)
            print(json.dumps({"revision": watcher.revision, "values": watcher.snapshot()}),
                  flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


class Proc:
    """A child process whose stdout is read line by line as JSON."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[Any] = []

    async def line(self, timeout: float = 15.0) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.proc.stdout.readline()
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"child ended early: {err.decode()[-2000:]}")
        text = raw.decode()
        try:
            found = json.loads(text)
        except json.JSONDecodeError:
            found = text.rstrip("\n")
        self.lines.append(found)
        return found

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            rest, _ = await self.proc.communicate()
        for raw in rest.decode().splitlines():
            self.lines.append(json.loads(raw) if raw.startswith("{") else raw)
        return self.proc.returncode if self.proc.returncode is not None else -1


@contextlib.asynccontextmanager
async def spawn(*args: str) -> AsyncIterator[Proc]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    child = Proc(proc)
    try:
        yield child
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()


async def test_watch_json_prints_each_applied_change_and_exits_on_sigterm(
    shared_redis: RedisServer, tenant: str
) -> None:
    url = shared_redis.url
    async with Store(settings=Settings(redis_url=url)) as store:
        await store.set(tenant, "ns", "a", 1)
        await store.set(tenant, "ns", "secret", "x")
        await store.set_schema(tenant, "ns", Schema(keys={"secret": KeySpec(sensitive=True)}))
        async with spawn(*CLI, "watch", tenant, "--json", "--redis-url", url) as child:
            ready = await child.line()
            assert (ready["type"], ready["revision"]) == ("ready", 3)
            state = await child.line()  # the current state first, secrets masked
            assert state == {
                "type": "state", "tenant": tenant, "namespace": "ns", "revision": 3,
                "keys": {"a": {"value": 1, "version": 1}, "secret": {"value": "***", "version": 1}},
            }  # fmt: skip
            await store.set_many(tenant, "ns", {"a": 2, "b": 3}, actor="ops", reason="r")
            await store.delete(tenant, "ns", "a")
            await store.set(tenant, "ns", "secret", "y")
            first, second, third = [await child.line() for _ in range(3)]
            assert await child.stop() == 0
        assert (first["type"], first["revision"], first["namespace"]) == ("change", 4, "ns")
        assert first["actor"] == "ops"
        assert sorted((c["key"], c["op"], c["old"], c["new"]) for c in first["changes"]) == [
            ("a", "changed", 1, 2),
            ("b", "added", None, 3),
        ]
        assert [(c["key"], c["op"]) for c in second["changes"]] == [("a", "removed")]
        assert third["changes"][0]["new"] == "***"


async def test_watch_text_follows_only_the_asked_namespace(
    shared_redis: RedisServer, tenant: str
) -> None:
    url = shared_redis.url
    async with Store(settings=Settings(redis_url=url)) as store:
        await store.set(tenant, "mine", "a", 1)
        args = ("watch", tenant, "--namespace", "mine", "--redis-url", url)
        async with spawn(*CLI, *args) as child:
            assert str(await child.line()).startswith(f"watching {tenant} at rev 1")
            assert await child.line() == "state rev 1 mine a=1 (v1)"
            await store.set(tenant, "other", "a", 1)
            await store.set(tenant, "mine", "a", 2)
            line = await child.line()
            assert await child.stop() == 0
        assert line == "rev 3 mine ~a: 1 -> 2 by anonymous"


@pytest.mark.slow
async def test_several_watcher_processes_end_identical_to_the_store(
    shared_redis: RedisServer, tenant: str
) -> None:
    url = shared_redis.url
    async with (
        Store(settings=Settings(redis_url=url)) as store,
        contextlib.AsyncExitStack() as stack,
    ):
        await store.set(tenant, "w0", "start", 0)
        children = [
            await stack.enter_async_context(spawn(sys.executable, "-c", CHILD, url, tenant))
            for _ in range(3)
        ]
        cli = await stack.enter_async_context(spawn(*CLI, "watch", tenant, "--json",
                                                    "--redis-url", url))  # fmt: skip
        for child in [*children, cli]:
            await child.line()

        async def writer(n: int) -> None:
            for i in range(60):
                await store.set_many(tenant, f"w{n}", {"i": i, f"k{i % 5}": [n, i]})
                if i % 7 == 0:
                    await store.set(tenant, "_defaults", f"d{n}", i)
                if i % 11 == 10:
                    await store.delete(tenant, f"w{n}", f"k{i % 5}")
                await asyncio.sleep(0.002)

        started = time.monotonic()
        await asyncio.gather(*(writer(n) for n in range(3)))
        final = await store.set(tenant, "done", "flag", True)
        expected_rev, expected = await store_values(store, tenant)
        assert expected_rev == final.revision
        for child in children:
            result = await child.line(timeout=20)
            assert result == {"revision": final.revision, "values": expected}
        while not (cli.lines and cli.lines[-1].get("revision") == final.revision):
            await cli.line(timeout=20)
        assert await cli.stop() == 0
        changes = [line for line in cli.lines if line.get("type") == "change"]
        revisions = [c["revision"] for c in changes]
        assert revisions == sorted(revisions)
        applied = [c["revision"] for c in changes if not c["resync"]]
        assert len(applied) == len(set(applied))
        assert revisions[-1] == final.revision
        assert time.monotonic() - started < 30


async def test_watch_changes_only_skips_the_state(shared_redis: RedisServer, tenant: str) -> None:
    url = shared_redis.url
    async with Store(settings=Settings(redis_url=url)) as store:
        await store.set(tenant, "ns", "a", 1)
        args = ("watch", tenant, "--json", "--changes-only", "--redis-url", url)
        async with spawn(*CLI, *args) as child:
            assert (await child.line())["type"] == "ready"
            await store.set(tenant, "ns", "a", 2)
            change = await child.line()
            assert await child.stop() == 0
        assert (change["type"], change["revision"]) == ("change", 2)
