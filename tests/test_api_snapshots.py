"""Tenant snapshots over HTTP: save, list (this tenant only), restore."""

from __future__ import annotations

from fastapi import FastAPI

from .api_helpers import ADMIN, client, make_token, running_app


async def test_save_list_restore(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        await _scenario(app, tenant)


async def _scenario(app: FastAPI, tenant: str) -> None:
    other = f"{tenant}-other"
    key = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
    async with client(app, ADMIN) as c:
        await c.put(key, json={"value": 1})
        await c.put(f"/api/v1/tenants/{other}/namespaces/svc/keys/k", json={"value": 1})
        r = await c.post(f"/api/v1/tenants/{tenant}/snapshots", params={"label": "x"})
        assert r.status_code == 201, r.text
        name = r.json()["name"]
        assert r.json()["tenant"]["tenant"] == tenant
        r = await c.post(f"/api/v1/tenants/{other}/snapshots")
        other_name = r.json()["name"]
        await c.put(key, json={"value": 2})
        listed = (await c.get(f"/api/v1/tenants/{tenant}/snapshots")).json()["snapshots"]
        assert [s["name"] for s in listed] == [name]
        r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{other_name}/restore")
        assert r.status_code == 404
        r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/../../etc/restore")
        assert r.status_code == 404
        r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{name}/restore")
        assert r.status_code == 200, r.text
        assert (await c.get(key)).json()["value"] == 1
        assert (
            await c.post(f"/api/v1/tenants/{tenant}/snapshots", params={"label": "a/b"})
        ).status_code == 422
    mine = await make_token(app, f"snap-{tenant}", {tenant: ["write"]})
    async with client(app, mine) as c:
        assert (await c.get(f"/api/v1/tenants/{tenant}/snapshots")).status_code == 403
        assert (await c.get(f"/api/v1/tenants/{other}/snapshots")).status_code == 404
