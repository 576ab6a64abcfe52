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


async def test_verify_checks_a_listed_snapshot_of_this_tenant(
    backend_url: str, tenant: str
) -> None:
    other = f"{tenant}-other"
    async with running_app(backend_url, admin_token=ADMIN) as app:
        async with client(app, ADMIN) as c:
            for t in (tenant, other):
                await c.put(f"/api/v1/tenants/{t}/namespaces/svc/keys/k", json={"value": 1})
            name = (await c.post(f"/api/v1/tenants/{tenant}/snapshots")).json()["name"]
            other_name = (await c.post(f"/api/v1/tenants/{other}/snapshots")).json()["name"]
            r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{name}/verify")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["verified"] is True
            assert body["name"] == name
            assert body["size"] > 0
            assert body["tenant"]["tenant"] == tenant
            assert body["tenant"]["keys"] == 1
            r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{other_name}/verify")
            assert r.status_code == 404
            r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/nope.kvsnap/verify")
            assert r.status_code == 404
            path = app.state.store.settings.data_dir / "snapshots" / name
            data = bytearray(path.read_bytes())
            data[len(data) // 3] ^= 0xFF
            path.write_bytes(bytes(data))
            r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{name}/verify")
            assert r.status_code == 422, r.text
            assert "snapshot" in r.json()["error"]["code"]
        mine = await make_token(app, f"verify-{tenant}", {tenant: ["write"]})
        async with client(app, mine) as c:
            r = await c.post(f"/api/v1/tenants/{tenant}/snapshots/{name}/verify")
            assert r.status_code == 403
