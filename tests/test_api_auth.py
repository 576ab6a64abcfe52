"""Auth over HTTP: tokens and rights, masking of secrets, tenant isolation on every route."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from kvconf._redis.names import TOKEN_NAMES_KEY, TOKENS_KEY
from kvconf.api.routes import watch as watch_routes

from .api_helpers import ADMIN, client, make_token, running_app

SECRET = "hunter2-" + uuid.uuid4().hex
OLD = "old-" + uuid.uuid4().hex


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


async def seed(app: FastAPI, tenant: str) -> None:
    """A tenant with a sensitive key and a plain one, two revisions."""
    async with client(app, ADMIN) as c:
        base = f"/api/v1/tenants/{tenant}/namespaces/svc"
        assert (await c.post(base, json={"values": {"password": OLD, "plain": 1}})).is_success
        schema = {"keys": {"password": {"type": "str", "sensitive": True, "default": SECRET}}}
        assert (await c.put(f"{base}/schema", json=schema)).is_success
        assert (await c.put(f"{base}/keys/password", json={"value": SECRET})).is_success


async def test_no_token_is_401_when_auth_is_configured(app: FastAPI, tenant: str) -> None:
    async with client(app) as c:
        r = await c.get(f"/api/v1/tenants/{tenant}/namespaces")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert (await c.get("/api/v1/config/1")).status_code == 401
        assert (await c.get("/healthz")).status_code == 200
    async with client(app, "kvc_wrong") as c:
        assert (await c.get("/api/v1/tenants")).status_code == 401


async def test_rights_are_ranked_and_secrets_separate(app: FastAPI, tenant: str) -> None:
    await seed(app, tenant)
    reader = await make_token(app, f"r-{tenant}", {tenant: ["read"]})
    writer = await make_token(app, f"w-{tenant}", {tenant: ["write"]})
    seer = await make_token(app, f"s-{tenant}", {tenant: ["read", "secrets"]})
    url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/plain"
    async with client(app, reader) as c:
        assert (await c.get(url)).status_code == 200
        assert (await c.put(url, json={"value": 2})).status_code == 403
        assert (await c.get(url.replace("plain", "password"))).json()["value"] == "***"
        me = (await c.get("/api/v1/tokens/me")).json()
        assert me["name"] == f"r-{tenant}"
        assert me["grants"] == {tenant: ["read"]}
    async with client(app, writer) as c:
        r = await c.put(url, json={"value": 2})
        assert r.status_code == 200
        assert (await c.get(url)).json()["updated_by"] == f"w-{tenant}@127.0.0.1"
        assert (await c.delete(f"/api/v1/tenants/{tenant}")).status_code == 403
        r = await c.put(f"/api/v1/tenants/{tenant}/namespaces/svc/schema", json={})
        assert r.status_code == 403
        r = await c.post("/api/v1/tokens", json={"name": "x", "grants": {tenant: ["read"]}})
        assert r.status_code == 403
    async with client(app, seer) as c:
        assert (await c.get(url.replace("plain", "password"))).json()["value"] == SECRET
    async with client(app, ADMIN) as c:
        names = [t["name"] for t in (await c.get("/api/v1/tokens")).json()["tokens"]]
        assert f"r-{tenant}" in names
        assert (await c.delete(f"/api/v1/tokens/r-{tenant}")).status_code == 200
        assert (await c.delete(f"/api/v1/tokens/r-{tenant}")).status_code == 404
    async with client(app, reader) as c:
        assert (await c.get(url)).status_code == 401


async def test_secrets_are_masked_everywhere(app: FastAPI, tenant: str) -> None:
    await seed(app, tenant)
    reader = await make_token(app, f"m-{tenant}", {tenant: ["write"]})
    t = f"/api/v1/tenants/{tenant}"
    reads = [
        f"{t}/namespaces/svc",
        f"{t}/namespaces/svc?at_revision=1",
        f"{t}/namespaces/svc/keys/password",
        f"{t}/namespaces/svc/keys/password/history",
        f"{t}/namespaces/svc/effective?explain=true",
        f"{t}/namespaces/svc/schema",
        f"{t}/schemas",
        f"{t}/log",
        f"{t}/diff?from=0",
        f"{t}/namespaces/svc/diff?from=0",
        f"{t}/watch?from_revision=0&max_events=3",
    ]
    async with client(app, reader) as c:
        for url in reads:
            r = await c.get(url)
            assert r.status_code == 200, (url, r.text)
            assert SECRET not in r.text, url
            assert OLD not in r.text, url
            assert "***" in r.text, url
        r = await c.post(
            f"{t}/namespaces/svc",
            params={"dry_run": "true"},
            json={"values": {"password": "new-" + OLD}},
        )
        assert r.status_code == 200
        assert SECRET not in r.text
        assert OLD not in r.text


def _fill(path: str, tenant: str) -> str:
    values = {"tenant": tenant, "namespace": "svc", "key": "plain", "name": "nobody"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


async def test_a_token_of_another_tenant_gets_nothing_on_every_route(
    app: FastAPI, tenant: str
) -> None:
    other = f"{tenant}-b"
    await seed(app, other)
    mine = await make_token(app, f"a-{tenant}", {tenant: ["admin", "secrets"]})
    bodies = {
        "PUT": {"value": 1},
        "POST": {"values": {"plain": 5}, "to_version": 1, "to_revision": 1},
    }
    tried = 0
    async with client(app, mine) as c:
        for path, operations in app.openapi()["paths"].items():
            if "{tenant}" not in path:
                continue
            for method in operations:
                url = _fill(path, other)
                if url.endswith("/diff"):
                    url += "?from=0"
                if url.endswith("/watch"):
                    url += "?from_revision=0&max_events=1"
                r = await c.request(method, url, json=bodies.get(method))
                tried += 1
                assert r.status_code == 404, (method, url, r.status_code, r.text)
                assert SECRET not in r.text
                assert '"plain"' not in r.text
        # the routes outside /tenants/{tenant}
        assert other not in (await c.get("/api/v1/tenants")).json()["tenants"]
        r = await c.post("/api/v1/tenants", json={"name": f"{other}-x", "clone_from": other})
        assert r.status_code in (403, 404)
        r = await c.post("/api/v1/tokens", json={"name": "steal", "grants": {other: ["read"]}})
        assert r.status_code == 403
        for method, url in [("GET", "/api/v1/config/1"), ("PUT", "/api/v1/config/1/k")]:
            r = await c.request(method, url, json={"config_value": "1"})
            assert r.status_code == 404
            assert r.json()["success"] is False
        tokens = (await c.get("/api/v1/tokens")).json()["tokens"]
        assert [t["name"] for t in tokens] == [f"a-{tenant}"]
    assert tried >= 20
    async with client(app, ADMIN) as c:
        r = await c.get(f"/api/v1/tenants/{other}/namespaces/svc/keys/plain")
        assert r.json()["value"] == 1
        assert r.json()["version"] == 1


async def test_tenant_admin_may_grant_only_its_own_rights(app: FastAPI, tenant: str) -> None:
    boss = await make_token(app, f"boss-{tenant}", {tenant: ["admin"]})
    async with client(app, boss) as c:
        r = await c.post(
            "/api/v1/tokens", json={"name": f"u-{tenant}", "grants": {tenant: ["read"]}}
        )
        assert r.status_code == 201
        r = await c.post("/api/v1/tokens", json={"name": f"v-{tenant}", "grants": {"*": ["read"]}})
        assert r.status_code == 403
        r = await c.post(
            "/api/v1/tokens", json={"name": f"w-{tenant}", "grants": {tenant: ["secrets"]}}
        )
        assert r.status_code == 403
        r = await c.post(
            "/api/v1/tokens", json={"name": f"u-{tenant}", "grants": {tenant: ["read"]}}
        )
        assert r.status_code == 409
        r = await c.post("/api/v1/tokens", json={"name": "bad name", "grants": {tenant: ["read"]}})
        assert r.status_code == 422
        r = await c.post("/api/v1/tokens", json={"name": "x", "grants": {tenant: ["root"]}})
        assert r.status_code == 422
        assert (await c.delete(f"/api/v1/tokens/u-{tenant}")).status_code == 200


async def test_open_mode_never_returns_once_tokens_exist(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app:  # no admin token: open on loopback
        async with client(app) as anon:
            assert (await anon.get("/api/v1/tokens/me")).json()["open"] is True
            made = await anon.post(
                "/api/v1/tokens", json={"name": f"{tenant}-a", "grants": {tenant: ["admin"]}}
            )
            assert made.status_code == 201
            first = made.json()["token"]
            assert (await anon.get("/api/v1/tokens/me")).status_code == 401
        async with client(app, first) as tenant_admin:
            last = await tenant_admin.delete(f"/api/v1/tokens/{tenant}-a")
            assert last.status_code == 409  # the last token: revoking it would open nothing
            second = await tenant_admin.post(
                "/api/v1/tokens", json={"name": f"{tenant}-b", "grants": {tenant: ["read"]}}
            )
            assert second.status_code == 201
            assert (await tenant_admin.delete(f"/api/v1/tokens/{tenant}-b")).status_code == 200
        # Even with every token gone behind the API's back (Redis lost its data),
        # this process stays closed: no anonymous global admin, ever again.
        redis = app.state.store.redis
        await redis.delete(TOKENS_KEY, TOKEN_NAMES_KEY)
        app.state.auth._open_until = 0.0
        async with client(app) as anon:
            assert (await anon.get("/api/v1/tokens/me")).status_code == 401
            grab = {"name": "x", "grants": {"*": ["admin"]}}
            assert (await anon.post("/api/v1/tokens", json=grab)).status_code == 401


async def test_a_non_loopback_server_is_never_open(backend_url: str) -> None:
    async with running_app(backend_url, host="0.0.0.0") as app, client(app) as anon:
        assert (await anon.get("/api/v1/tokens/me")).status_code == 401
        assert (await anon.get("/api/v1/config/1")).status_code == 401


async def test_log_of_a_tenant_rollback_is_masked_for_readers(app: FastAPI, tenant: str) -> None:
    await seed(app, tenant)  # r1 values, r2 schema, r3 password = SECRET
    async with client(app, ADMIN) as c:
        base = f"/api/v1/tenants/{tenant}"
        assert (await c.put(f"{base}/namespaces/db/keys/dsn", json={"value": "x"})).is_success
        rolled = await c.post(f"{base}/rollback", json={"to_revision": 1})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["commits"][0]["namespace"] == "*"
    reader = await make_token(app, f"{tenant}-r", {tenant: ["read"]})
    async with client(app, reader) as c:
        log = await c.get(f"/api/v1/tenants/{tenant}/log", params={"since": 3})
        assert log.status_code == 200, log.text
        (event,) = [e for e in log.json()["events"] if e["namespace"] == "*"]
        by_key = {ch["key"]: ch["value"] for ch in event["changes"]}
        assert by_key["password"] == "***"
        assert OLD not in log.text
        assert SECRET not in log.text


async def test_dry_run_does_not_confirm_a_guessed_secret(app: FastAPI, tenant: str) -> None:
    await seed(app, tenant)
    writer = await make_token(app, f"{tenant}-w", {tenant: ["write"]})
    async with client(app, writer) as c:
        verdicts = []
        for guess in ("wrong-guess", SECRET):
            r = await c.post(
                f"/api/v1/tenants/{tenant}/namespaces/svc",
                params={"dry_run": "true"},
                json={"values": {"password": guess, "plain": 1}},
            )
            assert r.status_code == 200, r.text
            verdicts.append({ch["key"]: ch["change"] for ch in r.json()["changes"]})
    assert verdicts[0]["password"] == verdicts[1]["password"] == "changed"
    assert verdicts[1]["plain"] == "unchanged"  # non-sensitive keys still say so


async def test_a_revoked_token_loses_its_open_watch_stream(
    app: FastAPI, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_routes, "RECHECK_SECONDS", 0.1)
    await seed(app, tenant)
    reader = await make_token(app, f"{tenant}-s", {tenant: ["read"]})

    async def revoke_then_write() -> None:
        await asyncio.sleep(0.5)
        async with client(app, ADMIN) as admin:
            assert (await admin.delete(f"/api/v1/tokens/{tenant}-s")).status_code == 200
            url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/plain"
            assert (await admin.put(url, json={"value": "after-revoke"})).is_success

    async with client(app, reader) as c:
        task = asyncio.create_task(revoke_then_write())
        r = await asyncio.wait_for(
            c.get(f"/api/v1/tenants/{tenant}/watch", params={"max_events": 1}), timeout=10
        )
        await task
    assert r.status_code == 200
    assert "event: error" in r.text
    assert "unauthorized" in r.text
    assert "after-revoke" not in r.text


async def test_change_set_across_masks_secrets_and_needs_every_namespace(
    app: FastAPI, tenant: str
) -> None:
    await seed(app, tenant)
    writer = await make_token(
        app, f"x-{tenant}", {f"{tenant}/svc": ["write"], f"{tenant}/web": ["read"]}
    )
    url = f"/api/v1/tenants/{tenant}/changes"
    guess = "guess-" + uuid.uuid4().hex
    async with client(app, writer) as c:
        for body, status in [
            ({"values": {"svc": {"plain": 2}, "hidden": {"k": 1}}}, 404),
            ({"values": {"svc": {"plain": 2}}, "deletes": {"hidden": ["k"]}}, 404),
            ({"values": {"svc": {"plain": 2}}, "expect": {"hidden": {"k": 1}}}, 404),
            ({"values": {"svc": {"plain": 2}, "web": {"k": 1}}}, 403),
            ({"values": {"svc": {"plain": 2}, "_defaults": {"k": 1}}}, 404),
        ]:
            for params in ({}, {"dry_run": "true"}):
                r = await c.post(url, params=params, json=body)
                assert r.status_code == status, (body, r.text)
        body = {"values": {"svc": {"password": guess, "plain": 2}}}
        r = await c.post(url, params={"dry_run": "true"}, json=body)
        assert r.status_code == 200, r.text
        assert SECRET not in r.text
        assert guess not in r.text
        assert "***" in r.text
        r = await c.post(url, json={**body, "expect": {"svc": {"password": 1}}})
        assert r.status_code == 409
        assert SECRET not in r.text
        assert guess not in r.text
        r = await c.post(url, json={"values": {"svc": {"password": 5}}})  # schema: a str
        assert r.status_code == 422
        assert SECRET not in r.text
        r = await c.post(url, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["versions"] == {"svc/password": 3, "svc/plain": 2}
        assert guess not in r.text
    async with client(app, ADMIN) as c:
        r = await c.get(f"/api/v1/tenants/{tenant}/namespaces/svc/keys/plain")
        assert r.json()["updated_by"] == f"x-{tenant}@127.0.0.1"
        assert (await c.get(f"/api/v1/tenants/{tenant}/namespaces/hidden")).json()["keys"] == {}
