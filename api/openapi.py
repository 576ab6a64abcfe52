"""The OpenAPI document clients generate from, and the docs pages that show it offline.

Routes declare their operation id and their 2xx body (``responses=
response_doc(Struct)``, schemas from msgspec). :func:`build_openapi` adds what
is the same for every route, from one table: the error responses each
operation can give, all with the real error body (``{"error": {"code",
"message", ...}}``, or the CloudBrain shape under ``/api/v1/config``), minus
FastAPI's ``{"detail": [...]}`` 422 that this API never sends; an example
for every response built from its schema; the watch stream as
``text/event-stream`` and ``/metrics`` as ``text/plain``.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts and styles from
this server (``/docs-assets``, files shipped by the ``fastapi-offline``
package), so they work without internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from .errors import CLOUDBRAIN_PREFIX
from .models import COMPONENTS, CloudError, Error, response_doc

__all__ = ["ASSETS", "ERROR_STATUSES", "build_openapi", "docs_routes", "error_statuses"]

#: Swagger UI and ReDoc assets shipped by fastapi-offline, served under /docs-assets.
ASSETS = Path(fastapi_offline.__file__).parent / "static"
_ASSET_NAMES = frozenset(p.name for p in ASSETS.iterdir()) if ASSETS.is_dir() else frozenset()

#: Status → (description, example error code).
ERROR_STATUSES: dict[int, tuple[str, str]] = {
    401: ("No valid bearer token", "unauthorized"),
    403: ("The token lacks the right for this operation", "forbidden"),
    404: ("Unknown (or invisible) tenant, namespace, key, snapshot or token", "not_found"),
    409: ("Conflict: a version expectation failed, or the name exists", "version_conflict"),
    410: ("The change log no longer holds that revision", "history_trimmed"),
    412: ("If-Match / If-None-Match failed (ETag: the current version)", "precondition_failed"),
    413: ("Request body too large", "body_too_large"),
    422: ("Invalid input: name, parameter, body or schema", "invalid_input"),
    503: ("Redis is unavailable", "unavailable"),
}

# Operations whose extra error statuses the path and method do not tell.
_EXTRA: dict[str, set[int]] = {
    "getNamespace": {410},
    "getChangeLog": {410},
    "diffTenant": {410},
    "diffNamespace": {410},
    "rollbackTenant": {409, 410},
    "rollbackKey": {409},
    "commitChanges": {409},
    "watchTenant": {410, 503},
    "createTenant": {409},
    "createToken": {409},
    "putSchema": {409},
    "deleteSchema": {409},
    "restoreSnapshot": {409},
}
_UNAUTHENTICATED = {"healthz", "readyz", "getMetrics"}
_NO_404 = {"listTenants", "whoAmI", "listTokens", "createToken", "getStats"}


def error_statuses(path: str, method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses ``operation`` can answer (the one table, applied by rules)."""
    op_id = operation.get("operationId", "")
    if op_id == "healthz" or op_id == "getMetrics":
        return set()
    if op_id == "readyz":
        return {503}
    found = {401, 403, 503}
    if operation.get("parameters") or "requestBody" in operation:
        found.add(422)
    if op_id not in _NO_404:
        found.add(404)
    if "requestBody" in operation:
        found.add(413)
    headers = {p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"}
    if {"if-match", "if-none-match"} & headers or op_id in {"putKey", "deleteKey"}:
        found |= {409, 412}
    writes_keys = path.startswith(("/api/v1/tenants/{tenant}/namespaces", CLOUDBRAIN_PREFIX))
    if method in {"put", "post", "delete"} and writes_keys:
        found.add(409)
    return found | _EXTRA.get(op_id, set())


# -- examples ---------------------------------------------------------------------

_STRINGS: dict[str, str] = {
    "tenant": "acme",
    "namespace": "svc",
    "key": "timeout",
    "config_key": "temperature",
    "config_value": "0.7",
    "actor": "deployer@10.0.0.7",
    "updated_by": "deployer@10.0.0.7",
    "created_by": "admin",
    "reason": "raise the timeout for the holiday load",
    "epoch": "5f0c3a9e2b7d4c11",
    "code": "key_not_found",
    "message": "key 'timeout' not found in acme/svc",
    "error": "key not found",
    "name": "ci-deployer",
    "token": "kvc_3q2-example-token-text",
    "instance": "web-1-4211",
    "host": "web-1",
    "label": "before-upgrade",
    "path": "/var/lib/kvconf/snapshots/kvconf-20260102T030405Z.kvs",
    "source": "kvconf-20260102T030405Z.kvs",
    "layer": "namespace",
    "description": "Request timeout in seconds",
    "status": "ok",
    "op": "",
    "type": "change",
    "change": "changed",
    "mode": "replace",
    "value": "30",
}
_INTS: dict[str, int] = {
    "revision": 42,
    "version": 3,
    "old_version": 2,
    "since": 40,
    "from_revision": 40,
    "to_revision": 42,
    "live_revision": 42,
    "file_revision": 37,
    "next_before": 1,
    "expected": 2,
    "actual": 3,
    "ai_id": 12,
    "pid": 4211,
    "keys": 12,
    "namespaces": 3,
    "versions": 57,
    "tenants": 4,
    "log_entries": 57,
    "schemas": 1,
    "watchers": 2,
    "memory_bytes": 18_432,
}
_DATE = "2026-01-02T03:04:05.678Z"


def _example(schema: dict[str, Any], comps: dict[str, Any], name: str = "", depth: int = 0) -> Any:
    if depth > 8:
        return None
    ref = schema.get("$ref")
    if ref is not None:
        return _example(comps.get(ref.rsplit("/", 1)[1], {}), comps, name, depth + 1)
    for combo in ("anyOf", "oneOf"):
        if combo in schema:
            options = [s for s in schema[combo] if s.get("type") != "null"] or schema[combo]
            return _example(options[0], comps, name, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if props:
            return {k: _example(v, comps, k, depth + 1) for k, v in props.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            sample = _STRINGS.get(_KEY_OF.get(name, ""), "timeout")
            return {sample: _example(extra, comps, "", depth + 1)}
        return {}
    if kind == "array":
        return [_example(schema.get("items", {}), comps, name.rstrip("s"), depth + 1)]
    if kind == "string":
        if schema.get("format") == "date-time" or name.endswith("_at") or name == "ts":
            return _DATE
        return _STRINGS.get(name, "text")
    if kind == "integer":
        return _INTS.get(name, 1)
    if kind == "number":
        return 1767323045.5 if name.endswith("_at") else 1.5
    if kind == "boolean":
        return name not in {"dry_run", "deleted", "stale", "open", "secrets"}
    if kind == "null":
        return None
    return 30 if name == "value" else _STRINGS.get(name, 30)  # any JSON value


# Which name a map's keys stand for, by the map's own name.
_KEY_OF = {"keys": "key", "values": "key", "versions": "key", "schemas": "namespace",
           "grants": "tenant", "configuration": "config_key", "expect": "key"}  # fmt: skip

_SSE_EXAMPLE = (
    'id: 43\nevent: change\ndata: {"tenant":"acme","epoch":"5f0c3a9e2b7d4c11","revision":43,'
    '"namespace":"svc","actor":"deployer@10.0.0.7","reason":"","ts":"2026-01-02T03:04:05Z",'
    '"changes":[{"key":"timeout","version":4,"old_version":3,"deleted":false,"value":45}],'
    '"type":"change"}\n\n'
)
_METRICS_EXAMPLE = (
    "# HELP kvconf_tenant_revision Current revision of each tenant watched by this process\n"
    "# TYPE kvconf_tenant_revision gauge\n"
    'kvconf_tenant_revision{tenant="acme"} 42.0\n'
)


def _media(schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {"schema": schema, "example": example}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (see the module docstring)."""
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    comps: dict[str, Any] = schema.setdefault("components", {}).setdefault("schemas", {})
    comps.update(COMPONENTS)
    for unused in ("HTTPValidationError", "ValidationError"):
        comps.pop(unused, None)
    error_refs = {
        False: response_doc(Error)[200]["content"]["application/json"]["schema"],
        True: response_doc(CloudError)[200]["content"]["application/json"]["schema"],
    }
    comps.update(COMPONENTS)
    for path, operations in schema["paths"].items():
        cloud = path.startswith(CLOUDBRAIN_PREFIX)
        for method, op in operations.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            for status in list(responses):
                if not status.startswith("2"):
                    del responses[status]  # FastAPI's 422 and any stale error entries
            if op.get("operationId") == "watchTenant":
                responses["200"] = {
                    "description": (
                        "Server-Sent Events: change, schema, tenant, reset, progress, error"
                    ),
                    "content": {"text/event-stream": _media({"type": "string"}, _SSE_EXAMPLE)},
                }
            elif op.get("operationId") == "getMetrics":
                responses["200"] = {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": _media({"type": "string"}, _METRICS_EXAMPLE)},
                }
            for ok in responses.values():
                for media in ok.get("content", {}).values():
                    if "example" not in media:
                        media["example"] = _example(media.get("schema", {}), comps)
            for error in sorted(error_statuses(path, method, op)):
                description, code = ERROR_STATUSES[error]
                example: Any = (
                    {"success": False, "error": description}
                    if cloud
                    else {"error": {"code": code, "message": description}}
                )
                responses[str(error)] = {
                    "description": description,
                    "content": {"application/json": _media(error_refs[cloud], example)},
                }
    schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    schema["security"] = [{"bearer": []}, {}]
    return schema


# -- offline docs pages ---------------------------------------------------------------

ASSETS_PREFIX = "/docs-assets"


async def _swagger(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="kvconf - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
    )


async def _redoc(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="kvconf - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PREFIX}/favicon.png",
        with_google_fonts=False,
    )


async def _asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in _ASSET_NAMES:  # only the shipped files: no path tricks
        return HTMLResponse("not found", status_code=404)
    return FileResponse(ASSETS / name, headers={"Cache-Control": "public, max-age=86400"})


def docs_routes() -> list[Route]:
    """``/docs``, ``/redoc`` and their assets, outside the OpenAPI document."""
    return [
        Route("/docs", _swagger, methods=["GET"], include_in_schema=False),
        Route("/redoc", _redoc, methods=["GET"], include_in_schema=False),
        Route(f"{ASSETS_PREFIX}/{{name}}", _asset, methods=["GET"], include_in_schema=False),
    ]
