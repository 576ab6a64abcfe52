"""The OpenAPI contract: valid, stable ids, typed responses, real error bodies, offline docs."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from kvconf.api.app import create_app
from kvconf.config import Settings

from .api_helpers import client, running_app
from .openapi_helpers import conformance, schema_errors

_ID = re.compile(r"[a-z][A-Za-z]+")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    doc: dict[str, Any] = create_app(Settings(redis_url="memory://openapi-doc")).openapi()
    return doc


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def test_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)
    assert len(_operations(spec)) >= 40


def test_operation_ids_are_short_stable_and_unique(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in _operations(spec)]
    assert len(ids) == len(set(ids))
    assert all(_ID.fullmatch(i) for i in ids), [i for i in ids if not _ID.fullmatch(i)]
    for expected in ("getKey", "putKey", "deleteKey", "listNamespaces", "commitChangeSet",
                     "watchTenant", "getStats", "getTenantStats", "createTenant"):  # fmt: skip
        assert expected in ids


def test_every_operation_has_a_typed_2xx_and_documented_errors(spec: dict[str, Any]) -> None:
    for path, _method, op in _operations(spec):
        name = op["operationId"]
        ok = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        assert ok, name
        for status, response in ok.items():
            ((kind, media),) = response["content"].items()
            schema = media["schema"]
            if kind == "application/json":
                assert "$ref" in schema or "anyOf" in schema, (name, status, schema)
            assert "example" in media, (name, status)
            assert not schema_errors(spec, schema, media["example"]), (name, status)
        errors = {s: r for s, r in op["responses"].items() if not s.startswith("2")}
        if name not in {"healthz", "getMetrics"}:
            assert errors, name
        body = "CloudError" if path.startswith("/api/v1/config") else "Error"
        for status, response in errors.items():
            media = response["content"]["application/json"]
            assert media["schema"] == {"$ref": f"#/components/schemas/{body}"}, (name, status)
            assert not schema_errors(spec, media["schema"], media["example"]), (name, status)
        if path.startswith("/api/v1/tenants/{tenant}"):
            assert {"401", "403", "404", "422", "503"} <= errors.keys(), name


def test_fastapi_validation_error_shape_is_gone(spec: dict[str, Any]) -> None:
    text = str(spec)
    assert "HTTPValidationError" not in text
    assert "'detail'" not in text
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]


def test_stream_and_metrics_media_types(spec: dict[str, Any]) -> None:
    watch = spec["paths"]["/api/v1/tenants/{tenant}/watch"]["get"]["responses"]["200"]
    assert list(watch["content"]) == ["text/event-stream"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(metrics["content"]) == ["text/plain"]


async def test_docs_pages_work_offline(backend_url: str) -> None:
    async with running_app(backend_url) as app, client(app) as http:
        for page in ("/docs", "/redoc"):
            r = await http.get(page)
            assert r.status_code == 200
            urls = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", r.text)
            urls += re.findall(r"""(?:url|spec-url)\s*:\s*['"]([^'"]+)['"]""", r.text)
            assert urls, page
            for url in urls:
                assert "//" not in url, (page, url)  # no other host, not even scheme-relative
                if url.endswith(".json"):
                    continue
                asset = await http.get(url)
                assert asset.status_code == 200, (page, url)
                assert asset.content, url
        assert (await http.get("/docs-assets/../app.py")).status_code == 404
        assert (await http.get("/docs-assets/nope.js")).status_code == 404


async def test_real_responses_fit_their_documentation(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url) as app, client(app) as http:
        spec = app.openapi()
        base = f"/api/v1/tenants/{tenant}"
        key = f"{base}/namespaces/svc/keys/k"
        k = "/api/v1/tenants/{tenant}/namespaces/{namespace}/keys/{key}"
        calls: list[tuple[str, str, str, Any]] = [
            ("PUT", key, k, {"value": 1}),
            ("PUT", key, k, {"value": 2}),
            ("GET", key, k, None),
            ("GET", f"{base}/namespaces/svc/keys/nope", k, None),
            ("GET", f"{base}/namespaces/svc", k.rsplit("/keys", 1)[0], None),
            ("GET", f"{base}/log", "/api/v1/tenants/{tenant}/log", None),
            ("GET", f"{base}/diff?from_revision=0", "/api/v1/tenants/{tenant}/diff", None),
            ("GET", f"{key}/history", k + "/history", None),
            ("GET", f"{base}/namespaces/svc/effective?explain=true",
             "/api/v1/tenants/{tenant}/namespaces/{namespace}/effective", None),
            ("GET", base, "/api/v1/tenants/{tenant}", None),
            ("GET", f"{base}/stats", "/api/v1/tenants/{tenant}/stats", None),
            ("GET", "/api/v1/tenants/bad%20name", "/api/v1/tenants/{tenant}", None),
            ("POST", f"{base}/namespaces/svc?dry_run=true",
             "/api/v1/tenants/{tenant}/namespaces/{namespace}", {"values": {"k": 3}}),
            ("POST", f"{base}/changes", "/api/v1/tenants/{tenant}/changes",
             {"values": {"svc": {"k": 4}, "web": {"j": 1}}}),
            ("POST", f"{base}/changes?dry_run=true", "/api/v1/tenants/{tenant}/changes",
             {"values": {"svc": {"k": 5}}, "deletes": {"web": ["j"]}}),
            ("POST", f"{base}/changes", "/api/v1/tenants/{tenant}/changes",
             {"values": {"svc": {"k": 6}}, "expect": {"svc": {"k": 1}}}),
            ("GET", "/api/v1/config/1", "/api/v1/config/{ai_id}", None),
            ("GET", "/readyz", "/readyz", None),
            ("GET", "/metrics", "/metrics", None),
        ]  # fmt: skip
        problems: list[str] = []
        for method, url, template, body in calls:
            r = await http.request(method, url, json=body)
            problems += conformance(spec, method, template, r)
    assert not problems, problems
