"""Operations endpoints, metrics, OpenAPI docs, and Redis outages as 503."""

from __future__ import annotations

import httpx

from .api_helpers import client, running_app
from .redis_server import RedisServer


async def test_health_ready_metrics_docs(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app, client(app) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
        await http.put(url, json={"value": 1})
        await http.put(url, json={"value": 2}, headers={"If-Match": '"9"'})
        await http.post(url + "/rollback", json={"to_version": 1})
        text = (await http.get("/metrics")).text
        for name in (
            "kvconf_http_requests_total",
            "kvconf_http_request_duration_seconds_bucket",
            'kvconf_writes_total{kind="key"}',
            "kvconf_conflicts_total 1.0",
            'kvconf_rollbacks_total{scope="key"} 1.0',
            'kvconf_errors_total{code="precondition_failed"} 1.0',
            "kvconf_sse_streams_open 0.0",
        ):
            assert name in text, name
        assert "/api/v1/tenants/{tenant}/namespaces/{namespace}/keys/{key}" in text
        assert (await http.get("/docs")).status_code == 200
        spec = (await http.get("/openapi.json")).json()
        assert "/api/v1/config/{ai_id}" in spec["paths"]
        assert "ChangeSet" in spec["components"]["schemas"]


async def test_redis_down_is_503(redis_server: RedisServer, tenant: str) -> None:
    async with running_app(redis_server.url) as app, client(app) as http:
        url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
        assert (await http.put(url, json={"value": 1})).status_code == 201
        redis_server.stop()
        r = await http.get("/readyz")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
        assert (await http.get("/healthz")).status_code == 200
        for method, path, body in [
            ("GET", url, None),
            ("PUT", url, {"value": 2}),
            ("GET", f"/api/v1/tenants/{tenant}/log", None),
            ("GET", f"/api/v1/tenants/{tenant}/watch", None),
            ("GET", "/api/v1/tenants", None),
        ]:
            r = await http.request(method, path, json=body)
            assert r.status_code == 503, (path, r.text)
        r = await http.get("/api/v1/config/1")
        assert r.status_code == 503
        assert r.json()["success"] is False
        redis_server.start()
        assert (await http.get("/readyz")).status_code == 200


def test_error_table_walks_the_mro() -> None:
    from kvconf.api.errors import STATUS, status_of
    from kvconf.exceptions import (
        HistoryTrimmed,
        InvalidName,
        KeyNotFound,
        SchemaViolation,
        TenantExists,
        Unavailable,
    )

    assert status_of(KeyNotFound("t", "n", ["k"])) == 404
    assert status_of(InvalidName("key", "", "empty")) == 422
    assert status_of(SchemaViolation([])) == 422
    assert status_of(TenantExists("t")) == 409
    assert status_of(HistoryTrimmed("t", 1, 5)) == 410
    assert status_of(Unavailable("down")) == 503
    assert all(400 <= s < 600 for s in STATUS.values())


async def test_open_mode_and_client_address_in_actor(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app:
        async with client(app, host="10.1.2.3") as http:
            me = (await http.get("/api/v1/tokens/me")).json()
            assert me["open"] is True
            url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
            await http.put(url, json={"value": 1})
            assert (await http.get(url)).json()["updated_by"] == "anonymous@10.1.2.3"
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kvconf") as raw:
            assert (await raw.get("/healthz")).status_code == 200
