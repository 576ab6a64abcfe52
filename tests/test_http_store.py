"""kvconf.Store over a kvconf server (``Store("http://...", token=...)``): the same
methods, results and exceptions as over Redis, against a real ``kvconf serve``
subprocess on the embedded store and on a real redis-server."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from kvconf import (
    ChangeEvent,
    Forbidden,
    HistoryTrimmed,
    InvalidInput,
    KeyConflict,
    KeyNotFound,
    KeySpec,
    NotFound,
    Schema,
    SchemaViolation,
    Settings,
    Store,
    SyncStore,
    TenantExists,
    TenantNotFound,
    Unauthorized,
    Unavailable,
    VersionConflict,
    VersionNotFound,
)
from kvconf._http.client import error_from
from kvconf._http.store import NOT_AVAILABLE, HttpStore

from .redis_server import RedisServer, free_port
from .serve_process import forget_tokens, serving

#: The module\'s servers keep this many revisions of each tenant\'s change log.
LOG_LIMIT = 1100


@dataclass
class Server:
    base: str
    admin: str
    backend: str
    redis_url: str | None


@pytest.fixture(scope="module", params=["embedded", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One ``kvconf serve`` with an admin token per backend for the module."""
    url = None
    if request.param == "redis":
        shared: RedisServer = request.getfixturevalue("shared_redis")
        url = shared.url
    admin = "http-admin-" + uuid.uuid4().hex
    try:
        data = tmp_path_factory.mktemp("http") / "data"
        with serving(data, url, admin, KVCONF_LOG_LIMIT=str(LOG_LIMIT)) as (base, _proc):
            yield Server(base, admin, request.param, url)
    finally:
        if url is not None:  # tokens left on the shared server would close others' open mode
            forget_tokens(url)


@pytest.fixture
async def remote(server: Server) -> AsyncIterator[Store]:
    async with Store(server.base, token=server.admin) as store:
        yield store


def _tenant() -> str:
    return "h-" + uuid.uuid4().hex[:10]


def _token(server: Server, grants: dict[str, list[str]], **extra: Any) -> str:
    resp = httpx.post(
        f"{server.base}/api/v1/tokens",
        json={"name": "t-" + uuid.uuid4().hex[:10], "grants": grants, **extra},
        headers={"Authorization": f"Bearer {server.admin}"},
    )
    assert resp.status_code == 201, resp.text
    token: str = resp.json()["token"]
    return token


# -- shape -------------------------------------------------------------------------


def test_http_store_overrides_every_public_method_of_store() -> None:
    """No Store method may fall through to Redis code on an HttpStore."""
    public = {n for n in dir(Store) if not n.startswith("_")}
    missing = sorted(n for n in public if "HttpStore" not in getattr(HttpStore, n).__qualname__)
    # ``redis`` is an instance attribute of Store: a property here that refuses.
    assert missing == []
    assert isinstance(HttpStore.__dict__["redis"], property)


def test_store_dispatches_on_the_url_scheme() -> None:
    store = Store("http://127.0.0.1:1", token="x")
    assert type(store) is HttpStore
    assert isinstance(store, Store)
    assert type(Store("HTTPS://kvconf.example")) is HttpStore
    assert type(Store("memory://http-dispatch")) is Store
    with pytest.raises(InvalidInput):
        Store("memory://http-dispatch", token="x")  # a token means a server URL


def test_error_bodies_map_back_to_the_exception_tree() -> None:
    conflict = error_from(
        412,
        {"error": {"code": "precondition_failed", "message": "m", "tenant": "a",
                   "conflicts": [{"key": "k", "expected": 1, "actual": 2}]}},
    )  # fmt: skip
    assert isinstance(conflict, VersionConflict)
    assert conflict.conflicts == [KeyConflict("k", 1, 2)]
    problem = {"key": "k", "rule": "min", "message": "x"}
    body = {"error": {"code": "schema_violation", "message": "m", "problems": [problem]}}
    problems = error_from(422, body)
    assert isinstance(problems, SchemaViolation)
    assert problems.problems[0].rule == "min"
    missing = error_from(404, {"error": {"code": "key_not_found", "message": "m",
                                         "tenant": "a", "keys": ["k"], "args": 1}})  # fmt: skip
    assert isinstance(missing, KeyNotFound)
    assert missing.keys == ["k"]
    assert missing.args == ("m",)
    hidden = error_from(404, {"error": {"code": "namespace_not_found", "message": "m"}})
    assert isinstance(hidden, NotFound)
    assert hidden.code == "namespace_not_found"
    assert isinstance(error_from(401, {"error": {"code": "unauthorized"}}), Unauthorized)
    assert isinstance(error_from(403, {"error": {"code": "forbidden"}}), Forbidden)
    assert isinstance(error_from(502, None), Unavailable)
    assert isinstance(error_from(422, {"error": {"code": "invalid_request"}}), InvalidInput)


# -- against a server ----------------------------------------------------------------


async def test_reads_and_writes_return_what_the_redis_store_returns(
    server: Server, remote: Store
) -> None:
    t = _tenant()
    await remote.create_tenant(t)
    first = await remote.set(t, "ai-12", "stale_timeout", 30, reason="first")
    assert first.versions == {"stale_timeout": 1}
    assert first.tenant == t
    await remote.set_many(t, "ai-12", {"stale_timeout": 45, "mode": "fast"})
    await remote.set(t, "_defaults", "region", "eu")
    await remote.delete(t, "ai-12", "mode")
    rolled = await remote.rollback(t, "ai-12", "stale_timeout", 1)
    assert rolled.versions == {"stale_timeout": 3}
    assert rolled.epoch == first.epoch

    entry = await remote.get(t, "ai-12", "stale_timeout")
    assert (entry.value, entry.version) == (30, 3)
    assert await remote.tenants() == sorted(await remote.tenants())
    assert t in await remote.tenants()
    assert await remote.namespaces(t) == ["_defaults", "ai-12"]
    assert await remote.revision(t) == rolled.revision
    assert await remote.effective(t, "ai-12") == {"stale_timeout": 30, "region": "eu"}
    assert (await remote.explain_key(t, "ai-12", "region")).layer == "tenant_defaults"
    assert (await remote.explain_key(t, "ai-12", "nope")).layer is None
    version = await remote.version(t, "ai-12", "mode", 2)
    assert version.deleted
    assert version.version == 2
    with pytest.raises(VersionNotFound):
        await remote.version(t, "ai-12", "stale_timeout", 9)
    with pytest.raises(KeyNotFound):
        await remote.get(t, "ai-12", "mode")
    with pytest.raises(TenantNotFound):
        await remote.get(_tenant(), "ai-12", "mode")
    assert await remote.ping() is True

    if server.redis_url is None:
        return
    # The same reads straight from the same Redis give equal results.
    async with Store(server.redis_url) as direct:
        assert await remote.get(t, "ai-12", "stale_timeout") == await direct.get(
            t, "ai-12", "stale_timeout"
        )
        assert await remote.get_namespace(t, "ai-12") == await direct.get_namespace(t, "ai-12")
        assert await remote.info(t) == await direct.info(t)
        assert await remote.history(t, "ai-12", "stale_timeout") == await direct.history(
            t, "ai-12", "stale_timeout"
        )
        assert await remote.history(t, "ai-12", "stale_timeout", limit=1, before=3) == (
            await direct.history(t, "ai-12", "stale_timeout", limit=1, before=3)
        )
        assert await remote.explain(t, "ai-12") == await direct.explain(t, "ai-12")
        remote_state = await remote.read_state(t)
        direct_state = await direct.read_state(t)
        assert (remote_state.revision, remote_state.epoch) == (
            direct_state.revision,
            direct_state.epoch,
        )
        assert remote_state.namespaces == {ns: e for ns, e in direct_state.namespaces.items() if e}
        only = await remote.read_state(t, ["ai-12"])
        assert only.namespaces == {"ai-12": direct_state.namespaces["ai-12"]}


async def test_compare_and_set_conflicts_are_version_conflicts(remote: Store) -> None:
    t = _tenant()
    await remote.set(t, "ai-12", "a", "secret-value-1")
    with pytest.raises(VersionConflict) as put:
        await remote.set(t, "ai-12", "a", "secret-value-2", expect_version=5)
    assert put.value.conflicts == [KeyConflict("a", 5, 1)]
    assert "secret-value" not in str(put.value)
    with pytest.raises(VersionConflict) as absent:
        await remote.set(t, "ai-12", "a", 1, expect_version=0)
    assert absent.value.conflicts == [KeyConflict("a", 0, 1)]
    assert (await remote.set(t, "ai-12", "a", 2, expect_version=-1)).versions == {"a": 2}
    with pytest.raises(VersionConflict) as many:
        await remote.commit(t, "ai-12", {"a": 3, "b": 1}, expect={"a": 1, "b": 0})
    assert many.value.conflicts == [KeyConflict("a", 1, 2)]
    done = await remote.commit(t, "ai-12", {"b": 1}, deletes=["a"], expect={"a": 2, "b": 0})
    assert done.versions == {"a": 3, "b": 1}
    with pytest.raises(TenantNotFound):
        await remote.commit(_tenant(), "ai-12", {"a": 1}, create=False)
    with pytest.raises(InvalidInput):
        await remote.commit(t, "ai-12", {})  # checked locally first, like over Redis


async def test_schemas_and_tenant_lifecycle(remote: Store) -> None:
    t = _tenant()
    schema = Schema(keys={"timeout": KeySpec(type="int", min=1, max=60)})
    revision = await remote.set_schema(t, "ai-12", schema)
    assert revision >= 1
    assert await remote.get_schema(t, "ai-12") == schema
    assert await remote.get_schema(t, "other") is None
    assert await remote.schemas(t) == {"ai-12": schema}
    assert (await remote.specs(t, "ai-12"))["timeout"].max == 60
    with pytest.raises(SchemaViolation) as bad:
        await remote.set(t, "ai-12", "timeout", 99)
    assert [p.key for p in bad.value.problems] == ["timeout"]
    await remote.set(t, "ai-12", "timeout", 30)
    with pytest.raises(SchemaViolation):
        await remote.check_schema(t, "ai-12", Schema(keys={"timeout": KeySpec(type="str")}))
    await remote.set_schema(t, "ai-12", None)
    assert await remote.get_schema(t, "ai-12") is None

    with pytest.raises(TenantExists):
        await remote.create_tenant(t)
    await remote.delete_tenant(t, reason="test")
    assert await remote.is_deleted(t) is True
    assert not await remote.exists(t)
    with pytest.raises(TenantNotFound):
        await remote.get(t, "ai-12", "timeout")
    await remote.undelete_tenant(t)
    assert await remote.exists(t)
    assert not await remote.is_deleted(t)
    assert (await remote.get(t, "ai-12", "timeout")).value == 30
    with pytest.raises(TenantNotFound):
        await remote.is_deleted(_tenant())


async def test_a_scoped_token_sees_only_its_namespace(server: Server, remote: Store) -> None:
    t = _tenant()
    await remote.set(t, "ai-12", "a", 1)
    await remote.set(t, "ai-13", "b", 1)
    scoped = _token(server, {f"{t}/ai-12": ["write"]})
    async with Store(server.base, token=scoped) as store:
        assert (await store.set(t, "ai-12", "a", 2)).versions == {"a": 2}
        assert (await store.get(t, "ai-12", "a")).value == 2
        assert await store.namespaces(t) == ["ai-12"]
        with pytest.raises(NotFound):
            await store.get(t, "ai-13", "b")
        with pytest.raises(NotFound):
            await store.set(t, "ai-13", "b", 2)
        with pytest.raises(Forbidden):
            await store.create_tenant(_tenant())
    async with Store(server.base, token="kvc_not-a-token") as store:
        with pytest.raises(Unauthorized):
            await store.get(t, "ai-12", "a")
    expiring = _token(server, {t: ["read"]}, expires_in=1)
    async with Store(server.base, token=expiring) as store:
        assert (await store.get(t, "ai-12", "a")).value == 2
        await asyncio.sleep(1.2)
        with pytest.raises(Unauthorized):
            await store.get(t, "ai-12", "a")


async def test_what_needs_redis_is_refused_by_name(remote: Store) -> None:
    assert NOT_AVAILABLE == ("redis", "repair_tenants")
    args: dict[str, list[Any]] = {}
    for name in NOT_AVAILABLE:
        if name == "redis":
            with pytest.raises(InvalidInput, match=name):
                remote.redis  # noqa: B018
            continue
        method = getattr(remote, name)
        with pytest.raises(InvalidInput, match=name):
            await method(*args.get(name, []))
    # The mapped methods are coroutines like Store's.
    assert inspect.iscoroutinefunction(HttpStore.get)


def test_sync_store_through_a_server(server: Server) -> None:
    t = _tenant()
    with SyncStore(server.base, token=server.admin) as store:
        assert store.set(t, "ai-12", "a", 1).revision >= 1
        assert store.get(t, "ai-12", "a").value == 1
        with pytest.raises(KeyNotFound):
            store.get(t, "ai-12", "b")


async def test_a_killed_server_is_unavailable(tmp_path: Path) -> None:
    admin = "kill-" + uuid.uuid4().hex
    with serving(tmp_path / "data", None, admin) as (base, proc):
        async with Store(base, token=admin) as store:
            await store.set("acme", "ai-12", "a", 1)
            proc.kill()
            proc.wait()
            with pytest.raises(Unavailable):
                await store.get("acme", "ai-12", "a")
            with pytest.raises(Unavailable, match="may still be applied"):
                await store.set("acme", "ai-12", "a", 2)
    async with Store(f"http://127.0.0.1:{free_port()}") as refused:
        with pytest.raises(Unavailable):
            await refused.ping()


async def test_store_without_a_url_reads_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("KVCONF_SERVER", "KVCONF_TOKEN", "KVCONF_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    t = _tenant()
    monkeypatch.setenv("KVCONF_SERVER", server.base)
    monkeypatch.setenv("KVCONF_TOKEN", server.admin)
    monkeypatch.setenv("KVCONF_REDIS_URL", "redis://127.0.0.1:1/0")  # KVCONF_SERVER comes first
    async with Store() as remote:
        assert type(remote) is HttpStore
        await remote.set(t, "ai-12", "a", 1)
    with SyncStore() as sync:
        assert type(sync.store) is HttpStore
        assert sync.get(t, "ai-12", "a").value == 1
    # An explicit URL (or settings) always wins over the environment.
    async with Store("memory://http-env") as explicit:
        assert type(explicit) is Store
        assert explicit.url == "memory://http-env"
    monkeypatch.delenv("KVCONF_SERVER")
    async with Store() as redis_store:
        assert type(redis_store) is Store
        assert redis_store.url == "redis://127.0.0.1:1/0"
    monkeypatch.delenv("KVCONF_REDIS_URL")
    caplog.clear()
    async with Store() as embedded:
        assert embedded.url is None
    assert "embedded default" in caplog.text
    monkeypatch.setenv("KVCONF_SERVER", "redis://127.0.0.1:1/0")
    with pytest.raises(InvalidInput, match="KVCONF_SERVER"):
        Store()


# -- the change log and change sets across namespaces ------------------------------

_TS = datetime(2000, 1, 1, tzinfo=UTC)


def _plain(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """Events without what differs between two stores given the same writes."""
    return [
        msgspec.structs.replace(e, tenant="", epoch="", ts=_TS, actor="", request_id="")
        for e in events
    ]


async def _every_kind_of_record(store: Store, t: str) -> None:
    """The same writes on any store: every kind of change log record."""
    await store.create_tenant(t, reason="new")  # the route's default reason is its own
    await store.set(t, "ai-12", "a", 1, reason="first")
    await store.set_many(t, "ai-12", {"a": 2, "b": "x"})
    await store.set_schema(t, "ai-12", Schema(keys={"a": KeySpec(type="int")}))
    await store.commit_across(
        t, {"ai-12": {"a": 3}, "ai-13": {"c": [1, {"d": None}]}}, deletes={"ai-12": ["b"]},
        reason="across",
    )  # fmt: skip
    await store.delete(t, "ai-13", "c")
    await store.rollback(t, "ai-12", "a", 1)
    await store.delete_tenant(t, reason="gone")
    await store.undelete_tenant(t, reason="back")


async def test_changes_since_gives_the_redis_stores_events(server: Server, remote: Store) -> None:
    t = _tenant()
    await _every_kind_of_record(remote, t)
    ours = await remote.changes_since(t, 0)
    assert [(e.type, e.op, e.namespace) for e in ours] == [
        ("tenant", "create", "*"), ("change", "", "ai-12"), ("change", "", "ai-12"),
        ("schema", "", "ai-12"), ("change", "", "*"), ("change", "", "ai-13"),
        ("change", "", "ai-12"), ("tenant", "soft_delete", "*"), ("tenant", "undelete", "*"),
    ]  # fmt: skip
    assert all(e.actor == "admin@127.0.0.1" and e.tenant == t for e in ours), ours
    async with Store(f"memory://twin-{uuid.uuid4().hex}") as twin:
        await _every_kind_of_record(twin, t)
        assert _plain(ours) == _plain(await twin.changes_since(t, 0))
        assert _plain(await remote.changes_since(t, 2, limit=3)) == _plain(
            await twin.changes_since(t, 2, limit=3)
        )
    assert await remote.changes_since(t, ours[-1].revision) == []
    with pytest.raises(TenantNotFound):
        await remote.changes_since(_tenant(), 0)
    for revision, limit in ((-1, 10), (0, 0)):
        with pytest.raises(InvalidInput):
            await remote.changes_since(t, revision, limit=limit)
    if server.redis_url is not None:
        async with Store(server.redis_url) as direct:
            assert ours == await direct.changes_since(t, 0)


async def test_changes_since_pages_past_the_routes_cap(server: Server, remote: Store) -> None:
    t = _tenant()
    total = LOG_LIMIT + 50
    await remote.create_tenant(t)
    if server.redis_url is not None:  # faster straight to Redis, trimmed as the server trims
        async with Store(server.redis_url, settings=Settings(log_limit=LOG_LIMIT)) as direct:
            for i in range(total - 2):
                await direct.set(t, "bulk", f"k{i % 50}", i)
    else:
        gate = asyncio.Semaphore(20)

        async def put(i: int) -> None:
            async with gate:
                await remote.set(t, "bulk", f"k{i % 50}", i)

        await asyncio.gather(*(put(i) for i in range(total - 2)))
    assert (await remote.set(t, "ai-12", "mine", 1)).revision == total
    with pytest.raises(HistoryTrimmed) as trimmed:
        await remote.changes_since(t, 0)
    since = trimmed.value.oldest - 1
    assert total - since > 1000  # more than one page of the route is kept
    events = await remote.changes_since(t, since, limit=total)
    assert [e.revision for e in events] == list(range(since + 1, total + 1))
    assert [e.revision for e in await remote.changes_since(t, since)] == list(
        range(since + 1, since + 1001)
    )
    scoped = _token(server, {f"{t}/ai-12": ["read"]})
    async with Store(server.base, token=scoped) as mine:
        (only,) = await mine.changes_since(t, since)  # past a page that shows it nothing
        assert (only.revision, only.namespace) == (total, "ai-12")
    if server.redis_url is not None:
        async with Store(server.redis_url) as direct:
            assert events == await direct.changes_since(t, since, limit=total)


async def test_changes_since_with_a_scoped_token_shows_its_namespaces_masked(
    server: Server, remote: Store
) -> None:
    t = _tenant()
    secret = "secret-" + uuid.uuid4().hex
    await remote.set_schema(t, "ai-12", Schema(keys={"pw": KeySpec(type="str", sensitive=True)}))
    await remote.commit_across(t, {"ai-12": {"pw": secret, "a": 1}, "ai-13": {"b": 2}})
    await remote.set(t, "ai-13", "b", 3)
    everything = await remote.changes_since(t, 0)
    scoped = _token(server, {f"{t}/ai-12": ["write"]})
    async with Store(server.base, token=scoped) as mine:
        seen = await mine.changes_since(t, 0)
    assert [e.revision for e in seen] == [e.revision for e in everything[:-1]]
    spanning = seen[-1]
    assert spanning.namespace == "*"
    assert {(c.namespace, c.key): c.value for c in spanning.changes} == {
        ("ai-12", "pw"): "***",
        ("ai-12", "a"): 1,
    }
    assert secret in str(everything[-2])  # the admin token has the secrets right


async def test_commit_across_is_one_revision_through_a_server(
    server: Server, remote: Store
) -> None:
    t = _tenant()
    done = await remote.commit_across(t, {"ai-12": {"a": 1}, "ai-13": {"b": 2}}, reason="both")
    assert (done.tenant, done.namespace) == (t, "*")
    assert done.versions == {"ai-12/a": 1, "ai-13/b": 1}
    assert (await remote.get(t, "ai-13", "b")).revision == done.revision
    (event,) = await remote.changes_since(t, done.revision - 1)
    assert (event.namespace, event.reason) == ("*", "both")
    with pytest.raises(VersionConflict) as conflict:
        await remote.commit_across(
            t, {"ai-12": {"a": "secret-2"}, "ai-14": {"c": 1}}, expect={"ai-12": {"a": 5}}
        )
    assert conflict.value.conflicts == [KeyConflict("ai-12/a", 5, 1)]
    assert "secret-2" not in str(conflict.value)
    assert await remote.namespaces(t) == ["ai-12", "ai-13"]  # nothing was written
    with pytest.raises(KeyNotFound) as missing:
        await remote.commit_across(t, {"ai-13": {"b": 3}}, deletes={"ai-12": ["nope"]})
    assert missing.value.keys == ["ai-12/nope"]
    new = _tenant()
    with pytest.raises(TenantNotFound):
        await remote.commit_across(new, {"ai-12": {"a": 1}}, create=False)
    assert not await remote.exists(new)
    with pytest.raises(InvalidInput):
        await remote.commit_across(t, {})  # checked locally first, like over Redis
    moved = await remote.commit_across(
        t, {"ai-13": {"a": 1}}, deletes={"ai-12": ["a"]}, expect={"ai-12": {"a": 1}}
    )
    assert moved.versions == {"ai-13/a": 1, "ai-12/a": 2}
    assert moved.revision == done.revision + 1

    scoped = _token(server, {f"{t}/ai-12": ["write"], f"{t}/ai-13": ["read"]})
    async with Store(server.base, token=scoped) as mine:
        mine_done = await mine.commit_across(t, {"ai-12": {"k": 1}})
        assert mine_done.versions == {"ai-12/k": 1}
        with pytest.raises(NotFound):
            await mine.commit_across(t, {"ai-12": {"k": 2}, "ai-14": {"k": 1}})
        with pytest.raises(Forbidden):
            await mine.commit_across(t, {"ai-12": {"k": 2}}, deletes={"ai-13": ["a"]})
    assert await remote.revision(t) == mine_done.revision  # the refused ones wrote nothing
    if server.redis_url is not None:
        async with Store(server.redis_url) as direct:
            assert await remote.changes_since(t, 0) == await direct.changes_since(t, 0)
            assert await direct.get(t, "ai-13", "a") == await remote.get(t, "ai-13", "a")
