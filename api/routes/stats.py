"""Stats: size and activity figures of every tenant (global admin) or of one."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from kvconf.stats import Stats, TenantStats, stats, tenant_stats

from ..deps import PrincipalDep, ReadAccess, StoreDep
from ..errors import Forbidden
from ..models import respond, response_doc

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/api/v1/stats",
    summary="Figures of every tenant and their totals (global admin)",
    responses=response_doc(Stats),
    operation_id="getStats",
)
async def all_stats(store: StoreDep, principal: PrincipalDep) -> Response:
    """Tenants, namespaces, keys, versions kept, log entries, schemas, watchers, memory.

    ``memory_bytes`` is null where Redis has no ``MEMORY USAGE`` (embedded store).
    """
    if not principal.is_admin:
        raise Forbidden("stats of every tenant need a global admin token")
    return respond(await stats(store))


@router.get(
    "/api/v1/tenants/{tenant}/stats",
    summary="Figures of one tenant",
    responses=response_doc(TenantStats),
    operation_id="getTenantStats",
)
async def one_tenant_stats(access: ReadAccess) -> Response:
    """Revision, namespaces, keys, versions kept, log entries, schemas, watchers, memory."""
    return respond(await tenant_stats(access.store, access.tenant))
