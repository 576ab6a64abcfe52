"""kvconf.Watcher over a kvconf server (``Watcher(t, "http://...", token=...)``):
as strong as the Redis watcher, against a real ``kvconf serve`` subprocess on
the embedded store and on a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from kvconf import (
    InvalidInput,
    KeySpec,
    Schema,
    Store,
    SyncWatcher,
    Unauthorized,
    Unavailable,
    Watcher,
)
from kvconf._http import watch as http_watch
from kvconf._http.watch import EventTooLarge, HttpWatchEngine, sse_frames
from kvconf.watcher import Change, Resync

from .redis_server import RedisServer, free_port
from .serve_process import ROOT, serve_env, wait_ready
from .test_http_store import Server, _tenant, _token, server  # noqa: F401
from .test_watcher import until

# -- the SSE parser -----------------------------------------------------------------


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


async def _parse(chunks: list[bytes]) -> list[tuple[str, str] | None]:
    response = httpx.Response(200, stream=_Chunks(chunks))
    return [frame async for frame in sse_frames(response)]


async def test_sse_frames_across_chunk_boundaries() -> None:
    wire = (
        b'id: 3\r\nevent: change\r\ndata: {"a":1}\r\n\r\n'
        b": ping\r\n\r\n"
        b'event: progress\ndata: {"revision":4}\n\n'
        b"data: one\r\ndata: two\r\n\r\n"
    )
    expected = [
        ("change", '{"a":1}'),
        None,
        ("progress", '{"revision":4}'),
        ("message", "one\ntwo"),
    ]
    assert await _parse([wire]) == expected
    assert await _parse([wire[i : i + 1] for i in range(len(wire))]) == expected  # byte by byte
    assert await _parse([b"event: change\r\ndata: {}"]) == []  # an unfinished event is no event


# -- helpers --------------------------------------------------------------------------


@pytest.fixture
async def remote(server: Server) -> AsyncIterator[Store]:  # noqa: F811
    async with Store(server.base, token=server.admin) as store:
        yield store


def _watcher(server: Server, tenant: str, token: str | None = None, **options: Any) -> Watcher:  # noqa: F811
    options.setdefault("check_interval", 0.5)
    options.setdefault("environ", {})
    return Watcher(tenant, server.base, token=token or server.admin, **options)


async def _converged(watcher: Watcher, store: Store, tenant: str, timeout: float = 10.0) -> None:
    """Wait until the watcher's cache is the tenant's state as the server reads it."""
    deadline = time.monotonic() + timeout
    while True:
        state = await store.read_state(tenant)
        values = {ns: {k: e.value for k, e in es.items()} for ns, es in state.namespaces.items()}
        values = {ns: v for ns, v in values.items() if v}
        if (watcher.revision, watcher.epoch, watcher.snapshot()) == (
            state.revision, state.epoch, values,
        ):  # fmt: skip
            return
        assert time.monotonic() < deadline, f"{watcher.snapshot()} != {values}"
        await asyncio.sleep(0.05)


# -- following ------------------------------------------------------------------------


async def test_lists_then_follows_in_order_with_callbacks(server: Server, remote: Store) -> None:  # noqa: F811
    tenant = _tenant()
    await remote.set_many(tenant, "ai-12", {"a": 1, "b": 2})
    async with _watcher(server, tenant) as watcher:
        assert isinstance(watcher._engine, HttpWatchEngine)
        assert (watcher.revision, watcher.get("ai-12", "a"), watcher.stale) == (1, 1, False)
        assert watcher.epoch == (await remote.info(tenant)).epoch
        seen: list[Change] = []
        awaited: list[int] = []

        async def slow(change: Change) -> None:
            await asyncio.sleep(0.01)
            awaited.append(change.revision)

        watcher.on_change(seen.append)
        watcher.on_change(slow, namespace="ai-12")
        await remote.set_many(tenant, "ai-12", {"a": 10, "c": 3}, reason="tune")
        result = await remote.delete(tenant, "ai-12", "b")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert [c.revision for c in seen] == [2, 3]
        first, second = seen
        assert first.reason == "tune"
        assert {k: (v.old, v.new) for k, v in first.changed.items()} == {"a": (1, 10)}
        assert set(first.added) == {"c"}
        assert {k: v.old for k, v in second.removed.items()} == {"b": 2}
        assert watcher.entry("ai-12", "a").version == 2  # type: ignore[union-attr]
        await until(lambda: awaited == [2, 3], timeout=5)
        await _converged(watcher, remote, tenant)


async def test_bind_layers_and_schema_changes(server: Server, remote: Store) -> None:  # noqa: F811
    class Limits(msgspec.Struct):
        rate: int = 1
        region: str = "eu"

    tenant = _tenant()
    await remote.set(tenant, "_defaults", "region", "us")
    await remote.set(tenant, "ai-1", "rate", 5)
    async with _watcher(server, tenant) as watcher:
        limits = watcher.bind("ai-1", Limits)
        assert (limits.value.rate, limits.value.region) == (5, "us")  # the _defaults layer
        result = await remote.set(tenant, "_defaults", "region", "ap")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert limits.value.region == "ap"
        changes: list[Change] = []
        watcher.on_change(changes.append)
        schema = Schema(keys={"burst": KeySpec(type="int", default=7)})
        await remote.set_schema(tenant, "ai-1", schema)
        await until(lambda: watcher.get("ai-1", "burst") == 7, timeout=5)
        assert [c.reason for c in changes] == ["schema"]
        assert watcher.specs("ai-1")["burst"].default == 7


async def test_scoped_watcher_advances_past_changes_elsewhere(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    await remote.set(tenant, "ai-12", "a", 1)
    token = _token(server, {f"{tenant}/ai-12": ["read"]})
    async with (
        _watcher(server, tenant, token=token) as scoped,
        _watcher(server, tenant, namespaces=["ai-12"]) as filtered,
        _watcher(server, tenant, token=token, namespaces=["ai-12"]) as both,
    ):
        watchers = (scoped, filtered, both)
        assert [w.snapshot() for w in watchers] == [{"ai-12": {"a": 1}}] * 3
        elsewhere = await remote.set(tenant, "ai-13", "secret-ish", 2)
        for watcher in watchers:
            assert await watcher.wait_for_revision(elsewhere.revision, timeout=5)
            assert watcher.snapshot() == {"ai-12": {"a": 1}}
        mine = await remote.set(tenant, "ai-12", "a", 3)
        for watcher in watchers:
            assert await watcher.wait_for_revision(mine.revision, timeout=5)
            assert watcher.get("ai-12", "a") == 3
            assert not watcher.stale
        assert "ai-13" not in scoped.entries()


async def test_sensitive_values_are_masked_without_the_secrets_right(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    await remote.set_schema(tenant, "svc", Schema(keys={"pw": KeySpec(sensitive=True)}))
    await remote.set(tenant, "svc", "pw", "hunter2")
    reader = _token(server, {tenant: ["read"]})
    async with _watcher(server, tenant, token=reader) as watcher:
        assert watcher.get("svc", "pw") == "***"
        result = await remote.set(tenant, "svc", "pw", "hunter3")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert watcher.get("svc", "pw") == "***"
    async with _watcher(server, tenant) as admin:
        assert admin.get("svc", "pw") == "hunter3"


async def test_restore_resets_and_delivers_the_net_change(server: Server, remote: Store) -> None:  # noqa: F811
    tenant = _tenant()
    await remote.set_many(tenant, "svc", {"k": 1, "gone": 1})
    headers = {"Authorization": f"Bearer {server.admin}"}
    async with httpx.AsyncClient(base_url=server.base, headers=headers) as http:
        saved = await http.post(f"/api/v1/tenants/{tenant}/snapshots")
        assert saved.status_code == 201, saved.text
        await remote.set_many(tenant, "svc", {"k": 2, "new": 1})
        await remote.delete(tenant, "svc", "gone")
        async with _watcher(server, tenant) as watcher:
            resyncs: list[Resync] = []
            watcher.on_resync(resyncs.append)
            assert watcher.snapshot() == {"svc": {"k": 2, "new": 1}}
            name = saved.json()["name"]
            restored = await http.post(f"/api/v1/tenants/{tenant}/snapshots/{name}/restore")
            assert restored.status_code == 200, restored.text
            await until(lambda: watcher.snapshot() == {"svc": {"k": 1, "gone": 1}}, timeout=10)
            assert resyncs
            assert resyncs[-1].namespaces == ["svc"]
            await _converged(watcher, remote, tenant)


async def test_a_tenant_created_after_the_watcher_started(server: Server, remote: Store) -> None:  # noqa: F811
    tenant = _tenant()
    async with _watcher(server, tenant) as watcher:
        assert (watcher.revision, watcher.snapshot(), watcher.stale) == (0, {}, False)
        await remote.set(tenant, "svc", "k", 1)
        await until(lambda: watcher.get("svc", "k") == 1, timeout=10)
        assert not watcher.stale


async def test_the_fleet_lists_http_watchers_while_they_stream(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    result = await remote.set(tenant, "svc", "k", 1)
    headers = {"Authorization": f"Bearer {server.admin}"}
    url = f"{server.base}/api/v1/tenants/{tenant}/fleet"
    async with _watcher(server, tenant, instance_id="web-1") as watcher:

        async def listed() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(headers=headers) as http:
                found: list[dict[str, Any]] = (await http.get(url)).json()["watchers"]
                return found

        deadline = time.monotonic() + 10
        while not (members := await listed()):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert [(m["instance"], m["revision"], m["stale"]) for m in members] == [
            ("web-1", result.revision, False)
        ]
        assert members[0]["pid"] == os.getpid()
        assert watcher.instance_id == "web-1"
    deadline = time.monotonic() + 10
    while await listed():
        assert time.monotonic() < deadline, "a closed watcher stays in the fleet"
        await asyncio.sleep(0.1)


async def test_a_refused_token_is_a_typed_error_at_start(server: Server) -> None:  # noqa: F811
    with pytest.raises(Unauthorized):
        await _watcher(server, _tenant(), token="not-a-token").start()


async def test_a_revoked_token_makes_the_watcher_stale_keeping_its_values(
    server: Server,  # noqa: F811
    remote: Store,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = _tenant()
    await remote.set(tenant, "svc", "k", 1)
    name = "w-" + uuid.uuid4().hex[:8]
    headers = {"Authorization": f"Bearer {server.admin}"}
    created = httpx.post(
        f"{server.base}/api/v1/tokens", headers=headers,
        json={"name": name, "grants": {tenant: ["read"]}},
    )  # fmt: skip
    token = created.json()["token"]
    async with _watcher(server, tenant, token=token) as watcher:
        assert not watcher.stale
        revoked = httpx.delete(f"{server.base}/api/v1/tokens/{name}", headers=headers)
        assert revoked.status_code in (200, 204), revoked.text
        await until(lambda: watcher.stale, timeout=15)
        assert watcher.get("svc", "k") == 1
        assert token not in caplog.text


def test_sync_watcher_and_the_environment(
    server: Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = _tenant()
    token = _token(server, {tenant: ["write"]})
    monkeypatch.setenv("KVCONF_SERVER", server.base)
    monkeypatch.setenv("KVCONF_TOKEN", token)
    monkeypatch.delenv("KVCONF_REDIS_URL", raising=False)
    with SyncWatcher(tenant, check_interval=0.5, environ={}) as watcher:
        assert watcher.url == server.base
        seen: list[int] = []
        watcher.on_change(lambda c: seen.append(c.revision))
        result = httpx.put(
            f"{server.base}/api/v1/tenants/{tenant}/namespaces/svc/keys/k",
            json={"value": 5}, headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert result.status_code in (200, 201), result.text
        revision = result.json()["revision"]
        assert watcher.wait_for_revision(revision, timeout=5)
        assert watcher.get("svc", "k") == 5
        assert seen == [revision]


# -- a server that dies, freezes, comes back --------------------------------------------


class _Serve:
    """A ``kvconf serve`` on a fixed port that a test can kill, freeze and restart."""

    def __init__(self, data: Path, redis_url: str | None, admin: str, **env: str) -> None:
        self.data, self.redis_url, self.admin, self.env = data, redis_url, admin, env
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data)]
        if self.redis_url is not None:
            args += ["--redis-url", self.redis_url]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from kvconf.cli import main; main()", *args],
            env=serve_env(KVCONF_ADMIN_TOKEN=self.admin, **self.env), cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_ready(self.base, self.proc)

    def store(self) -> Store:
        """An HTTP Store of this server, as its admin."""
        return Store(self.base, token=self.admin)

    def watcher(self, tenant: str, **options: Any) -> Watcher:
        """An HTTP watcher of ``tenant`` on this server, as its admin (0.5 s heartbeats)."""
        options = {"token": self.admin, "check_interval": 0.5, "environ": {}, **options}
        return Watcher(tenant, self.base, **options)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def _serve(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest, **env: str
) -> Iterator[_Serve]:
    url = None
    if backend == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        url = redis_server.url
    serve = _Serve(tmp_path / "data", url, "adm-" + uuid.uuid4().hex, **env)
    serve.start()
    try:
        yield serve
    finally:
        serve.stop()


BACKENDS = pytest.mark.parametrize("backend", ["embedded", "redis"])


@pytest.mark.slow
@BACKENDS
async def test_server_killed_and_restarted_while_following(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tenant = _tenant()
    with _serve(tmp_path, backend, request) as serve:
        async with serve.store() as store:
            await store.set(tenant, "svc", "k", 1)
            fsync = await store.set(tenant, "svc", "k", 2)
        await asyncio.sleep(1.2)  # past the embedded journal's window
        async with serve.watcher(tenant) as watcher:
            assert watcher.revision == fsync.revision
            await asyncio.to_thread(serve.kill)
            await until(lambda: watcher.stale, timeout=3)
            assert watcher.get("svc", "k") == 2  # last known values, served all along
            await asyncio.sleep(1.0)
            await asyncio.to_thread(serve.start)
            async with serve.store() as store:
                result = await store.set(tenant, "svc", "k", 3)
                assert await watcher.wait_for_revision(result.revision, timeout=15)
                await until(lambda: not watcher.stale, timeout=10)
                await _converged(watcher, store, tenant)


@pytest.mark.slow
@BACKENDS
async def test_a_frozen_server_is_noticed_within_two_heartbeats(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tenant = _tenant()
    with _serve(tmp_path, backend, request) as serve:
        async with serve.store() as store:
            await store.set(tenant, "svc", "k", 1)
            async with serve.watcher(tenant) as watcher:
                await asyncio.sleep(0.6)
                synced = watcher.last_synced_at
                assert synced is not None
                serve.signal(signal.SIGSTOP)
                frozen = time.monotonic()
                try:
                    await until(lambda: watcher.stale, timeout=5)
                    noticed = time.monotonic() - frozen
                    assert watcher.get("svc", "k") == 1
                finally:
                    serve.signal(signal.SIGCONT)
                assert noticed < 2.5  # two heartbeats of 0.5 s, generously
                result = await store.set(tenant, "svc", "k", 2)
                assert await watcher.wait_for_revision(result.revision, timeout=15)
                await until(lambda: not watcher.stale, timeout=10)
                last = watcher.last_synced_at
                assert last is not None
                assert last > synced


@pytest.mark.slow
@BACKENDS
async def test_boots_from_the_cache_file_when_the_server_is_down(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = _tenant()
    cache = tmp_path / "cache.json"
    with _serve(tmp_path, backend, request) as serve:
        async with serve.store() as store:
            await store.set(tenant, "svc", "k", 1)
        async with serve.watcher(tenant, cache_file=cache) as watcher:
            assert watcher.get("svc", "k") == 1
        assert cache.exists()
        serve.kill()
        caplog.set_level(logging.WARNING, "kvconf.watcher")
        async with serve.watcher(tenant, cache_file=cache) as watcher:
            assert watcher.stale
            assert "startup" in watcher.stale_reasons
            assert watcher.get("svc", "k") == 1
            assert "serving the cache file" in caplog.text
            await asyncio.to_thread(serve.start)
            async with serve.store() as store:
                result = await store.set(tenant, "svc", "k", 2)
                assert await watcher.wait_for_revision(result.revision, timeout=15)
                await until(lambda: not watcher.stale, timeout=10)
                await _converged(watcher, store, tenant)
        serve.kill()
        with pytest.raises(Unavailable):
            await serve.watcher(tenant, timeout=0.5).start()


async def _first_frame(server: Server, tenant: str, after: int = 1, **params: Any) -> Any:  # noqa: F811
    """The first event (or None: a heartbeat) of a stream resumed at revision ``after``."""
    headers = {"Authorization": f"Bearer {server.admin}", "Last-Event-ID": str(after)}
    async with httpx.AsyncClient(base_url=server.base, headers=headers) as http:
        path = f"/api/v1/tenants/{tenant}/watch"
        async with http.stream("GET", path, params={"heartbeat": 0.5, **params}) as resp:
            assert resp.status_code == 200
            async for frame in sse_frames(resp):
                return frame
    return "ended"


async def test_resuming_in_another_epoch_starts_with_a_reset(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    result = await remote.set(tenant, "svc", "k", 1)
    epoch = (await remote.info(tenant)).epoch
    assert await _first_frame(server, tenant, epoch=epoch) is None  # in step: a heartbeat
    found = await _first_frame(server, tenant, epoch="an-older-epoch")
    assert found is not None
    name, data = found
    assert name == "reset"
    assert msgspec.json.decode(data)["revision"] == result.revision


async def test_a_malformed_watcher_identity_is_a_422(server: Server, remote: Store) -> None:  # noqa: F811
    tenant = _tenant()
    await remote.set(tenant, "svc", "k", 1)
    headers = {"Authorization": f"Bearer {server.admin}", "X-Kvconf-Watcher": "{not json"}
    resp = httpx.get(f"{server.base}/api/v1/tenants/{tenant}/watch", headers=headers)
    assert resp.status_code == 422
    assert resp.json()["error"]["field"] == "X-Kvconf-Watcher"


@pytest.mark.slow
@BACKENDS
async def test_a_refused_stream_is_retried_after_its_retry_after(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tenant = _tenant()
    with _serve(tmp_path, backend, request, KVCONF_MAX_STREAMS="1") as serve:
        async with serve.store() as store:
            await store.set(tenant, "svc", "k", 1)
            first = serve.watcher(tenant)
            await first.start()
            try:
                async with serve.watcher(tenant) as second:
                    assert second.get("svc", "k") == 1  # listed: /state is no stream
                    await until(lambda: "stream" in second.stale_reasons, timeout=10)
                    await first.aclose()
                    result = await store.set(tenant, "svc", "k", 2)
                    assert await second.wait_for_revision(result.revision, timeout=20)
                    await until(lambda: not second.stale, timeout=10)
            finally:
                await first.aclose()


async def test_resuming_beyond_the_tenants_revision_starts_with_a_reset(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    """History lost under the same epoch (a failover dropping the last writes): the
    revisions written again must not be skipped as already seen."""
    tenant = _tenant()
    result = await remote.set(tenant, "svc", "k", 1)
    epoch = (await remote.info(tenant)).epoch
    found = await _first_frame(server, tenant, after=result.revision + 5, epoch=epoch)
    assert found is not None
    name, data = found
    assert name == "reset"
    assert msgspec.json.decode(data)["revision"] == result.revision


async def test_a_soft_deleted_tenant_brought_back_is_one_resync_not_a_replay(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    for i in range(3):
        await remote.set(tenant, "svc", f"k{i}", i)
    async with _watcher(server, tenant) as watcher:
        changes: list[Change] = []
        watcher.on_change(changes.append)
        await remote.delete_tenant(tenant)
        await until(lambda: watcher.snapshot() == {}, timeout=10)
        changes.clear()
        await remote.undelete_tenant(tenant)
        await until(lambda: watcher.snapshot() == {"svc": {"k0": 0, "k1": 1, "k2": 2}}, 10)
        await _converged(watcher, remote, tenant)
        assert changes
        assert all(c.resync for c in changes), [(c.revision, c.resync) for c in changes]


async def test_unusual_identities_and_reasons_do_not_break_the_client(
    server: Server,  # noqa: F811
    remote: Store,
) -> None:
    tenant = _tenant()
    await remote.set(tenant, "svc", "k", 1)
    with pytest.raises(InvalidInput):
        _watcher(server, tenant, instance_id="x" * 201)
    async with _watcher(server, tenant, instance_id="café-1") as watcher:
        result = await remote.set(tenant, "svc", "k", 2, reason="déploiement")
        assert await watcher.wait_for_revision(result.revision, timeout=5)
        assert not watcher.stale
    await remote.delete_tenant(tenant, reason="rétablir ✓")  # a header, in UTF-8
    await remote.undelete_tenant(tenant)
    events = await remote.changes_since(tenant, 0)
    assert [e.reason for e in events][-3:-1] == ["déploiement", "rétablir ✓"]


async def test_an_event_too_large_to_buffer_is_skipped_by_a_relist(
    server: Server,  # noqa: F811
    remote: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_watch, "MAX_EVENT", 4096)
    tenant = _tenant()
    await remote.set(tenant, "svc", "k", "small")
    async with _watcher(server, tenant) as watcher:
        resyncs: list[Resync] = []
        watcher.on_resync(resyncs.append)
        result = await remote.set(tenant, "svc", "big", "x" * 10_000)
        assert await watcher.wait_for_revision(result.revision, timeout=10)
        assert watcher.get("svc", "big") == "x" * 10_000
        assert [r.reason for r in resyncs] == ["an event too large to buffer"]
        after = await remote.set(tenant, "svc", "k", "next")
        assert await watcher.wait_for_revision(after.revision, timeout=10)
        assert watcher.get("svc", "k") == "next"


async def test_sse_frames_refuses_an_event_over_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_watch, "MAX_EVENT", 100)
    with pytest.raises(EventTooLarge):
        await _parse([b"event: change\r\ndata: " + b"x" * 200 + b"\r\n\r\n"])
    with pytest.raises(EventTooLarge):  # no newline yet: the buffer alone is over
        await _parse([b"data: " + b"x" * 60, b"x" * 60])
    assert await _parse([b"data: " + b"x" * 50 + b"\r\n\r\n"]) == [("message", "x" * 50)]


async def test_a_password_in_the_url_never_reaches_a_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    url = f"http://agent:pw-s3cret@127.0.0.1:{port}"
    with pytest.raises(Unavailable) as refused:
        await Watcher("acme", url, token="t", timeout=0.5, environ={}).start()
    assert "pw-s3cret" not in str(refused.value)
    assert "agent:***@127.0.0.1" in str(refused.value)
    assert "pw-s3cret" not in caplog.text
