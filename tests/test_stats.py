"""Stats of tenants: library, REST routes and ``kvconf stats``, on both backends."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from kvconf import TenantNotFound
from kvconf.cli import app as cli
from kvconf.config import Settings
from kvconf.models import KeySpec, Schema
from kvconf.stats import stats, tenant_stats
from kvconf.store import Store

from .api_helpers import ADMIN, client, make_token, running_app
from .redis_server import RedisServer


async def _seed(store: Store, tenant: str) -> None:
    await store.set_schema(tenant, "svc", Schema(keys={"n": KeySpec(type="int")}))
    await store.set_many(tenant, "svc", {"n": 1, "m": "x"})
    await store.set(tenant, "svc", "n", 2)
    await store.set(tenant, "other", "k", True)


async def test_tenant_stats(store: Store, tenant: str, backend_url: str) -> None:
    await _seed(store, tenant)
    got = await tenant_stats(store, tenant)
    assert (got.tenant, got.revision, got.namespaces, got.keys) == (tenant, 4, 2, 3)
    assert (got.versions, got.log_entries, got.schemas, got.watchers) == (4, 4, 1, 0)
    if backend_url.startswith("memory://"):
        assert got.memory_bytes is None  # fakeredis has no MEMORY USAGE
    else:
        assert got.memory_bytes is not None
        assert got.memory_bytes > 0
    with pytest.raises(TenantNotFound):
        await tenant_stats(store, tenant + "-nope")
    await store.delete_tenant(tenant)
    with pytest.raises(TenantNotFound):
        await tenant_stats(store, tenant)


async def test_global_stats_on_a_private_server(redis_server: RedisServer) -> None:
    store = Store(settings=Settings(redis_url=redis_server.url))
    try:
        await _seed(store, "a")
        await _seed(store, "b")
        every = await stats(store)
    finally:
        await store.aclose()
    assert (every.tenants, every.namespaces, every.keys, every.versions) == (2, 4, 6, 8)
    assert every.memory_bytes == sum(t.memory_bytes or 0 for t in every.by_tenant)
    assert [t.tenant for t in every.by_tenant] == ["a", "b"]


async def test_stats_routes(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        await _seed(app.state.store, tenant)
        reader = await make_token(app, "stats-reader", {tenant: ["read"]})
        async with client(app, reader) as http:
            r = await http.get(f"/api/v1/tenants/{tenant}/stats")
            assert r.status_code == 200, r.text
            assert r.json()["keys"] == 3
            assert "memory_bytes" in r.json()
            denied = await http.get("/api/v1/stats")
            assert denied.status_code == 403
            assert denied.json()["error"]["code"] == "forbidden"
        if backend_url.startswith("memory://"):  # the shared real server holds every test's
            async with client(app, ADMIN) as http:
                r = await http.get("/api/v1/stats")
                assert r.status_code == 200
                assert tenant in [t["tenant"] for t in r.json()["by_tenant"]]
                assert r.json()["memory_bytes"] is None


def test_stats_cli(tenant: str, backend_url: str) -> None:
    async def seed() -> None:
        store = Store(settings=Settings(redis_url=backend_url))
        try:
            await _seed(store, tenant)
        finally:
            await store.aclose()

    asyncio.run(seed())
    runner = CliRunner()
    result = runner.invoke(cli, ["stats", tenant, "--json", "--redis-url", backend_url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["keys"] == 3
    result = runner.invoke(cli, ["stats", tenant, "--redis-url", backend_url])
    assert result.exit_code == 0
    assert tenant in result.output
    result = runner.invoke(cli, ["stats", tenant + "-x", "--json", "--redis-url", backend_url])
    assert result.exit_code == 3
    assert json.loads(result.output)["error"]["code"] == "tenant_not_found"
