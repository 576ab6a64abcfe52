"""Operations endpoints, metrics, OpenAPI docs, and Redis outages as 503."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

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


async def test_request_id_is_echoed_and_tags_log_lines(
    backend_url: str, tenant: str, caplog: pytest.LogCaptureFixture
) -> None:
    from kvconf._logging import JsonFormatter, RequestIdFilter

    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO, logger="kvconf")
    async with running_app(backend_url) as app, client(app) as http:
        r = await http.post(
            "/api/v1/tenants", json={"name": tenant}, headers={"X-Request-ID": "trace-42.a:b"}
        )
        assert r.status_code == 201
        assert r.headers["x-request-id"] == "trace-42.a:b"
        insane = await http.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
        generated = insane.headers["x-request-id"]
        assert generated != "bad id\twith spaces"
        assert len(generated) == 32
        assert (await http.get("/healthz")).headers["x-request-id"] != generated
    lines = [rec for rec in caplog.records if "tenant " + tenant in rec.getMessage()]
    assert len(lines) == 1
    assert lines[0].request_id == "trace-42.a:b"  # type: ignore[attr-defined]
    doc = json.loads(JsonFormatter().format(lines[0]))
    assert doc["request_id"] == "trace-42.a:b"
    assert doc["logger"] == "kvconf.api"
    assert doc["level"] == "INFO"


async def test_metrics_scrape_has_ops_gauges(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app, client(app) as http:
        url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
        await http.put(url, json={"value": 1})
        for _ in range(100):  # the read cache starts a watcher of the tenant
            await http.get(url)
            if tenant in app.state.cache.watchers():
                break
            await asyncio.sleep(0.02)
        # The ASGI transport buffers a response: the stream runs in a task and
        # ends after one event, the write made once the scrape is done.
        watch = asyncio.create_task(
            http.get(f"/api/v1/tenants/{tenant}/watch", params={"max_events": 1})
        )
        for _ in range(200):  # until the stream knows its start revision
            if any(s.sent is not None for s in app.state.metrics.streams.values()):
                break
            await asyncio.sleep(0.02)
        text = (await http.get("/metrics")).text
        await http.put(url, json={"value": 2})
        assert (await asyncio.wait_for(watch, 10)).status_code == 200
        after = (await http.get("/metrics")).text
    assert "kvconf_sse_streams_open 1.0" in text
    assert "kvconf_sse_streams_open 0.0" in after
    assert f'kvconf_tenant_revision{{tenant="{tenant}"}} 1.0' in text
    assert f'kvconf_watcher_lag_revisions{{kind="cache",tenant="{tenant}"}} 0.0' in text
    assert f'kvconf_watcher_lag_revisions{{kind="sse",tenant="{tenant}"}} 0.0' in text
    assert 'kvconf_watchers_stale{kind="cache"} 0.0' in text
    assert 'kvconf_redis_command_duration_seconds_bucket{command="EVALSHA"' in text
    assert "process_cpu_seconds_total" in text
    assert "python_info" in text
    assert "_created" not in text


def test_multiprocess_metrics_sum_over_workers(tmp_path: Path) -> None:
    """Two processes write counters; a scrape of either sees the sum (and no _created)."""
    code = (
        "from kvconf.api.metrics import Metrics\n"
        "m = Metrics()\n"
        "m.wrote('key'); m.wrote('key')\n"
        "print(m.render().decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert 'kvconf_writes_total{kind="key"} 4.0' in second.stdout
    assert "python_info" in second.stdout
    assert "_created" not in second.stdout


async def test_metrics_need_read_on_every_tenant(backend_url: str) -> None:
    from .api_helpers import ADMIN, client, make_token, running_app

    async with running_app(backend_url, admin_token=ADMIN) as app:
        one = await make_token(app, f"one-{id(app)}", {"acme": ["admin"]})
        scraper = await make_token(app, f"scrape-{id(app)}", {"*": ["read"]})
        async with client(app) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with client(app, one) as tenant_admin:
            assert (await tenant_admin.get("/metrics")).status_code == 403
        async with client(app, scraper) as c:
            r = await c.get("/metrics")
            assert r.status_code == 200
            assert "kvconf_http_requests_total" in r.text
