"""Least-privilege tokens: namespace grants on every route, expiry, last use, granting."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from kvconf._redis.names import TOKENS_USED_KEY

from .api_helpers import ADMIN, client, make_token, running_app

MARK = "hidden-" + uuid.uuid4().hex
#: Tenant-level routes a namespace-scoped token may call: they show its namespaces only.
FILTERED = {
    "listNamespaces",
    "getTenant",
    "getChangeLog",
    "diffTenant",
    "listSchemas",
    "watchTenant",
    "getState",
    "rollbackTenant",
    "commitChanges",
}
BODIES: dict[str, Any] = {
    "commitChangeSet": {"values": {"plain": 5}},
    "commitChanges": {"values": {"vis": {"plain": 5}}},
    "putKey": {"value": 1},
    "rollbackKey": {"to_version": 1},
    "putSchema": {"keys": {}},
    "putAiConfig": {"heartbeat_interval": "30"},
    "putAiConfigKey": {"config_value": "30"},
}


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


class World:
    """A tenant with a visible and a hidden namespace, and two per-AI namespaces."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.vis = "vis"
        self.hid = f"hid-{uuid.uuid4().hex[:8]}"
        self.ai_vis = random.randrange(10**6, 10**9)
        self.ai_hid = self.ai_vis + 1


async def seed(app: FastAPI, tenant: str) -> World:
    world = World(tenant)
    async with client(app, ADMIN) as c:
        base = f"/api/v1/tenants/{tenant}/namespaces"
        for ns, value in ((world.vis, "shown"), (world.hid, MARK)):
            r = await c.post(f"{base}/{ns}", json={"values": {"plain": value, "other": value}})
            assert r.status_code == 200, r.text
            assert (await c.put(f"{base}/{ns}/schema", json={"keys": {}})).is_success
        r = await c.post(f"{base}/_defaults", json={"values": {"shared": "from-defaults"}})
        assert r.status_code == 200, r.text
        for ns, value in ((world.vis, "shown-2"), (world.hid, f"{MARK}-2")):
            r = await c.put(f"{base}/{ns}/keys/plain", json={"value": value})
            assert r.is_success
        # a change set across namespaces: its log record names both
        r = await c.post(f"/api/v1/tenants/{tenant}/rollback", json={"to_revision": 5})
        assert r.status_code == 200, r.text
        for ai in (world.ai_vis, world.ai_hid):
            r = await c.put(f"/api/v1/config/{ai}/heartbeat_interval", json={"config_value": "7"})
            assert r.is_success, r.text
    return world


def _fill(path: str, world: World, namespace: str, ai: int) -> str:
    values = {
        "tenant": world.tenant,
        "namespace": namespace,
        "key": "heartbeat_interval" if path.startswith("/api/v1/config") else "plain",
        "name": "nobody",
        "ai_id": str(ai),
    }
    url = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)
    if url.endswith("/diff"):
        url += "?from=0"
    if url.endswith("/watch"):
        url += "?from_revision=0&max_events=2"
    return url


def _operations(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, path, operationId) of every route that names a tenant or an AI, reads first."""
    found = []
    for path, operations in app.openapi()["paths"].items():
        if "{tenant}" not in path and "{ai_id}" not in path:
            continue
        for method, op in operations.items():
            found.append((method.upper(), path, op["operationId"]))
    order = {"GET": 0, "PUT": 1, "POST": 1, "DELETE": 2}
    return sorted(found, key=lambda f: order[f[0]])


async def test_a_namespace_token_sees_its_namespace_and_nothing_else_on_every_route(
    app: FastAPI, tenant: str
) -> None:
    world = await seed(app, tenant)
    token = await make_token(
        app, f"ns-{tenant}", {f"{tenant}/vis": ["write"], f"default/ai-{world.ai_vis}": ["write"]}
    )
    tried = 0
    async with client(app, token) as c:
        for method, path, op in _operations(app):
            body = BODIES.get(op, {})
            scoped = "{namespace}" in path or "{ai_id}" in path
            if op == "rollbackTenant":
                hidden = await c.post(
                    _fill(path, world, "", 0), json={"to_revision": 1, "namespace": world.hid}
                )
                assert hidden.status_code == 404, hidden.text
                whole = await c.post(_fill(path, world, "", 0), json={"to_revision": 1})
                assert whole.status_code == 404, whole.text  # the whole tenant: tenant-level
                body = {"to_revision": 1, "namespace": world.vis}
            if op == "commitChanges":  # every namespace of the change set must be visible
                for hidden_body in (
                    {"values": {world.vis: {"plain": 6}, world.hid: {"other": 6}}},
                    {"values": {world.vis: {"plain": 6}}, "deletes": {world.hid: ["other"]}},
                    {"values": {world.vis: {"plain": 6}}, "expect": {world.hid: {"other": 1}}},
                ):
                    for query in ("", "?dry_run=true"):
                        url = _fill(path, world, "", 0) + query
                        r = await c.post(url, json=hidden_body)
                        tried += 1
                        assert r.status_code == 404, (url, r.status_code, r.text)
                        assert MARK not in r.text
            if scoped:
                url = _fill(path, world, world.hid, world.ai_hid)
                r = await c.request(method, url, json=body)
                tried += 1
                assert r.status_code == 404, (method, url, r.status_code, r.text)
                assert MARK not in r.text
            url = _fill(path, world, world.vis, world.ai_vis)
            r = await c.request(method, url, json=body)
            tried += 1
            if scoped or op in FILTERED:
                assert r.status_code not in (401, 404), (method, url, r.status_code, r.text)
                if method == "GET":
                    assert r.status_code == 200, (method, url, r.text)
                assert MARK not in r.text, (method, url)
                assert world.hid not in r.text, (method, url)
            else:  # tenant-level resources do not exist for this token
                assert r.status_code == 404, (method, url, r.status_code, r.text)
        for url in (
            f"/api/v1/tenants/{tenant}/state?namespaces={world.hid}",
            f"/api/v1/tenants/{tenant}/watch?namespaces={world.hid}&max_events=1",
            f"/api/v1/tenants/{tenant}/namespaces/_defaults",
        ):
            assert (await c.get(url)).status_code == 404, url
        names = (await c.get(f"/api/v1/tenants/{tenant}/namespaces")).json()["namespaces"]
        assert names == [world.vis]
        assert tenant in (await c.get("/api/v1/tenants")).json()["tenants"]
        log = (await c.get(f"/api/v1/tenants/{tenant}/log")).json()["events"]
        spanning = [e for e in log if e["namespace"] == "*"]
        assert spanning, "the change set across namespaces shows its visible part"
        assert all(ch["namespace"] == world.vis for e in spanning for ch in e["changes"])
        r = await c.post("/api/v1/tenants", json={"name": f"{tenant}-x", "clone_from": tenant})
        assert r.status_code in (403, 404)
    assert tried >= 30
    async with client(app, ADMIN) as c:  # the hidden namespace was not touched
        r = await c.get(f"/api/v1/tenants/{tenant}/namespaces/{world.hid}/keys/other")
        assert r.json()["value"] == MARK


async def test_prefix_grants_cover_matching_namespaces(app: FastAPI, tenant: str) -> None:
    async with client(app, ADMIN) as c:
        for ns in ("ai-1", "ai-22", "other"):
            url = f"/api/v1/tenants/{tenant}/namespaces/{ns}/keys/k"
            assert (await c.put(url, json={"value": ns})).is_success
    token = await make_token(app, f"p-{tenant}", {f"{tenant}/ai-*": ["read"]})
    async with client(app, token) as c:
        base = f"/api/v1/tenants/{tenant}/namespaces"
        assert (await c.get(f"{base}/ai-1/keys/k")).status_code == 200
        assert (await c.get(f"{base}/ai-22/keys/k")).status_code == 200
        assert (await c.get(f"{base}/other/keys/k")).status_code == 404
        assert (await c.put(f"{base}/ai-1/keys/k", json={"value": 2})).status_code == 403
        assert (await c.get(base)).json()["namespaces"] == ["ai-1", "ai-22"]
        me = (await c.get("/api/v1/tokens/me")).json()
        assert me["grants"] == {f"{tenant}/ai-*": ["read"]}


async def test_cloudbrain_routes_honour_namespace_grants(app: FastAPI) -> None:
    ai = random.randrange(10**6, 10**9)
    async with client(app, ADMIN) as c:
        assert (
            await c.put(f"/api/v1/config/{ai}/grace_period", json={"config_value": "3"})
        ).is_success
    token = await make_token(app, f"cb-{ai}", {f"default/ai-{ai}": ["write"]})
    async with client(app, token) as c:
        r = await c.get(f"/api/v1/config/{ai}")
        assert r.status_code == 200, r.text
        assert r.json()["success"] is True
        r = await c.put(f"/api/v1/config/{ai}/grace_period", json={"config_value": "4"})
        assert r.status_code == 200, r.text
        for method, url in (
            ("GET", f"/api/v1/config/{ai + 1}"),
            ("GET", f"/api/v1/config/{ai + 1}/grace_period"),
            ("PUT", f"/api/v1/config/{ai + 1}/grace_period"),
        ):
            r = await c.request(method, url, json={"config_value": "5"})
            assert r.status_code == 404, (method, url, r.text)
            assert r.json()["success"] is False


async def test_an_expired_token_is_401(app: FastAPI, tenant: str) -> None:
    async with client(app, ADMIN) as c:
        url = f"/api/v1/tenants/{tenant}/namespaces/a/keys/k"
        assert (await c.put(url, json={"value": 1})).is_success
        made = await c.post(
            "/api/v1/tokens",
            json={"name": f"e-{tenant}", "grants": {f"{tenant}/a": ["admin"]}, "expires_in": 1},
        )
        assert made.status_code == 201, made.text
        assert made.json()["expires_at"] is not None
        bad = await c.post(
            "/api/v1/tokens", json={"name": "z", "grants": {tenant: ["read"]}, "expires_in": 0}
        )
        assert bad.status_code == 422
    token = made.json()["token"]
    async with client(app, token) as c:
        assert (await c.get(url)).status_code == 200
        # a token made by an expiring token expires no later than it
        child = await c.post(
            "/api/v1/tokens", json={"name": f"c-{tenant}", "grants": {f"{tenant}/a": ["read"]}}
        )
        assert child.status_code == 201, child.text
        assert child.json()["expires_at"] == made.json()["expires_at"]
        await asyncio.sleep(1.1)
        r = await c.get(url)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
        assert "expired" in r.json()["error"]["message"]
    async with client(app, child.json()["token"]) as c:
        assert (await c.get(url)).status_code == 401


async def test_last_used_at_is_recorded_at_most_once_a_minute(app: FastAPI, tenant: str) -> None:
    token = await make_token(app, f"u-{tenant}", {tenant: ["read"]})

    async def listed() -> dict[str, Any]:
        async with client(app, ADMIN) as c:
            tokens = (await c.get("/api/v1/tokens")).json()["tokens"]
        found: dict[str, Any] = next(t for t in tokens if t["name"] == f"u-{tenant}")
        return found

    assert (await listed()).get("last_used_at") is None
    async with client(app, token) as c:
        assert (await c.get("/api/v1/tokens/me")).status_code == 200
    first = (await listed())["last_used_at"]
    assert first is not None
    redis = app.state.store.redis
    writes = await redis.hgetall(TOKENS_USED_KEY)
    async with client(app, token) as c:
        for _ in range(5):
            assert (await c.get("/api/v1/tokens/me")).status_code == 200
    assert await redis.hgetall(TOKENS_USED_KEY) == writes  # no second write this minute
    assert (await listed())["last_used_at"] == first


async def test_a_token_grants_only_what_its_creator_holds(app: FastAPI, tenant: str) -> None:
    boss = await make_token(app, f"nsadmin-{tenant}", {f"{tenant}/ai-*": ["admin"]})
    writer = await make_token(app, f"nswriter-{tenant}", {f"{tenant}/ai-3": ["write"]})
    async with client(app, boss) as c:

        async def make(name: str, grants: dict[str, list[str]]) -> int:
            r = await c.post("/api/v1/tokens", json={"name": name, "grants": grants})
            return r.status_code

        assert await make(f"a-{tenant}", {f"{tenant}/ai-3": ["write"]}) == 201
        assert await make(f"b-{tenant}", {f"{tenant}/ai-x*": ["read"]}) == 201
        assert await make(f"c-{tenant}", {f"{tenant}/other": ["read"]}) == 403
        assert await make(f"d-{tenant}", {tenant: ["read"]}) == 403
        assert await make(f"e-{tenant}", {f"{tenant}/ai-*": ["secrets"]}) == 403
        assert await make(f"f-{tenant}", {"*": ["read"]}) == 403
        assert await make(f"g-{tenant}", {f"{tenant}/bad name": ["read"]}) == 422
        names = [t["name"] for t in (await c.get("/api/v1/tokens")).json()["tokens"]]
        assert f"a-{tenant}" in names
        assert f"nswriter-{tenant}" in names  # confined to the boss's namespaces
        assert (await c.delete(f"/api/v1/tokens/a-{tenant}")).status_code == 200
    async with client(app, writer) as c:
        r = await c.post(
            "/api/v1/tokens", json={"name": "w2", "grants": {f"{tenant}/ai-3": ["read"]}}
        )
        assert r.status_code == 403
