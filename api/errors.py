"""The one exception → HTTP status table, and the one handler that applies it.

Routes never build error responses: they raise (or let the library raise) a
:class:`~kvconf.exceptions.KvconfError`; :func:`kvconf_error_handler` walks the
exception's MRO through :data:`STATUS` to find the status. The API adds a few
errors of its own to the same tree (authentication, body size)::

    KvconfError
    └── ApiError
        └── BodyTooLarge        413
    Unauthorized            401 (kvconf.exceptions: the HTTP client raises them too)
    Forbidden               403
    NotFound
    └── NamespaceNotFound   404 (a namespace the token does not see)
    Unavailable
    └── TooManyStreams      503 + Retry-After (this worker's watch streams are full)

Error bodies are ``{"error": {"code": ..., "message": ..., <details>}}``; under
the CloudBrain prefix (``/api/v1/config``) they keep that API's shape,
``{"success": false, "error": "<message>"}``. The OpenAPI document lists,
for every operation, the statuses of this table it can answer with these
bodies (:func:`api.openapi.error_statuses`); keep the two in step.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from kvconf.exceptions import (
    Conflict,
    Forbidden,
    HistoryTrimmed,
    InvalidInput,
    KvconfError,
    NotFound,
    SnapshotError,
    TenantExists,
    Unauthorized,
    Unavailable,
    VersionConflict,
)

__all__ = [
    "CLOUDBRAIN_PREFIX",
    "STATUS",
    "ApiError",
    "BodyTooLarge",
    "Forbidden",
    "NamespaceNotFound",
    "TooManyStreams",
    "Unauthorized",
    "error_response",
    "http_error_handler",
    "kvconf_error_handler",
    "status_of",
    "validation_error_handler",
]

log = logging.getLogger("kvconf.api")

#: Routes under this prefix answer errors in the CloudBrain shape.
CLOUDBRAIN_PREFIX = "/api/v1/config"


class ApiError(KvconfError):
    """An error only the HTTP facade raises."""

    code = "api_error"


class NamespaceNotFound(NotFound):
    """A namespace the caller's token does not see (its existence is not revealed)."""

    code = "namespace_not_found"

    def __init__(self, tenant: str, namespace: str) -> None:
        super().__init__(
            f"namespace {namespace!r} of tenant {tenant!r} does not exist",
            tenant=tenant, namespace=namespace,
        )  # fmt: skip


class TooManyStreams(Unavailable):
    """This worker serves its maximum of watch streams: retry later (or elsewhere)."""

    code = "too_many_streams"

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            f"this server holds its maximum of {limit} watch streams; retry later",
            max_streams=limit, retry_after=retry_after,
        )  # fmt: skip
        self.retry_after = retry_after


class BodyTooLarge(ApiError):
    """The request body exceeds the server's limit."""

    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes", limit=limit)


#: Exception class → HTTP status; the most specific class in the MRO wins.
STATUS: dict[type[KvconfError], int] = {
    Unauthorized: 401,
    Forbidden: 403,
    BodyTooLarge: 413,
    NotFound: 404,
    VersionConflict: 409,
    TenantExists: 409,
    HistoryTrimmed: 410,
    Conflict: 409,
    InvalidInput: 422,
    SnapshotError: 422,
    Unavailable: 503,
    ApiError: 400,
    KvconfError: 400,
}


def status_of(exc: KvconfError) -> int:
    """The HTTP status of a kvconf error (walks the class hierarchy)."""
    for cls in type(exc).__mro__:
        status = STATUS.get(cls)
        if status is not None:
            return status
    return 400  # pragma: no cover - KvconfError is in the table


def _is_cloudbrain(request: Request) -> bool:
    return request.url.path.startswith(CLOUDBRAIN_PREFIX)


def error_response(
    request: Request,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Response:
    """The JSON error response in the shape the route's family expects."""
    if _is_cloudbrain(request):
        payload: Any = {"success": False, "error": body.get("message", "error")}
        if "problems" in body:  # every broken key at once, as the tenant routes give them
            payload["problems"] = body["problems"]
    else:
        payload = {"error": body}
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(str(body.get("code", "error"))).inc()
    return Response(
        msgspec.json.encode(payload),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


async def kvconf_error_handler(request: Request, exc: Exception) -> Response:
    """The one handler of :class:`KvconfError`: status from :data:`STATUS`."""
    assert isinstance(exc, KvconfError)
    status = status_of(exc)
    body = exc.to_dict()
    headers: dict[str, str] = {}
    if isinstance(exc, VersionConflict):
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.conflicts.inc()
        if getattr(request.state, "cas_from_header", False):
            # The precondition came from If-Match / If-None-Match: 412, with
            # the current version as the ETag to retry with.
            status = 412
            body["code"] = "precondition_failed"
            if len(exc.conflicts) == 1:
                body["current_version"] = exc.conflicts[0].actual
                headers["ETag"] = f'"{exc.conflicts[0].actual}"'
    elif isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    elif isinstance(exc, TooManyStreams):
        headers["Retry-After"] = str(exc.retry_after)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
    return error_response(request, status, body, headers or None)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's own parameter validation errors, as 422 naming each field."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query")),
            "message": str(err.get("msg", "")),
        }
        for err in exc.errors()
    ]
    text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    body = {"code": "invalid_request", "message": f"invalid request: {text}", "problems": problems}
    return error_response(request, 422, body)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's HTTP errors (unknown route, wrong method) in our error shape."""
    assert isinstance(exc, HTTPException)
    body = {"code": f"http_{exc.status_code}", "message": str(exc.detail)}
    return error_response(request, exc.status_code, body, dict(exc.headers or {}) or None)
