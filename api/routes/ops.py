"""Operations: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from kvconf.tokens import ALL_TENANTS

from ..deps import MetricsDep, PrincipalDep, StoreDep
from ..errors import Forbidden
from ..models import Status, respond, response_doc
from ..query import refuse_unknown_query

__all__ = ["router"]

router = APIRouter(tags=["operations"], dependencies=[Depends(refuse_unknown_query)])


@router.get(
    "/healthz",
    summary="Liveness: the process answers",
    operation_id="healthz",
    responses=response_doc(Status),
)
async def healthz() -> Response:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return respond({"status": "ok"})


@router.get(
    "/readyz",
    summary="Readiness: Redis answers (503 otherwise)",
    operation_id="readyz",
    responses=response_doc(Status),
)
async def readyz(store: StoreDep) -> Response:
    """``{"status": "ready"}`` when Redis answers a PING."""
    await store.ping()
    return respond({"status": "ready"})


@router.get("/metrics", summary="Prometheus metrics", operation_id="getMetrics")
async def metrics(
    m: MetricsDep, store: StoreDep, request: Request, principal: PrincipalDep
) -> Response:
    """Requests, latencies, Redis commands, writes, watchers, lags, scheduled jobs.

    The series name tenants, so scraping needs read on every tenant (a token
    granted ``{"*": ["read"]}``, or the admin token); open mode needs none.
    """
    if not principal.can(ALL_TENANTS, "read"):
        raise Forbidden("metrics name every tenant: they need read on all tenants ('*')")
    await m.refresh(store, request.app.state.cache)
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
