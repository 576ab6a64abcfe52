"""Tenants: list, create (empty, from a template, as a clone), info, delete, undelete."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from kvconf import snapshot
from kvconf._redis.names import validate_tenant
from kvconf.exceptions import InvalidInput, Unavailable
from kvconf.models import TenantInfo
from kvconf.store import Store
from kvconf.tenants import tenant_states

from ..deps import (
    AdminAccess,
    DryRun,
    PrincipalDep,
    StoreDep,
    ViewAccess,
    change_reason,
    check_access,
    note_write,
)
from ..errors import Forbidden
from ..models import (
    TenantCreate,
    TenantCreated,
    TenantDeleted,
    TenantDeletePreview,
    TenantList,
    TenantUndeleted,
    TenantUndeletePreview,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..provision import provision
from ..query import refuse_unknown_query

__all__ = ["router"]

log = logging.getLogger("kvconf.api")
router = APIRouter(
    prefix="/api/v1/tenants", tags=["tenants"], dependencies=[Depends(refuse_unknown_query)]
)


@router.get(
    "",
    summary="Tenants visible to the caller",
    operation_id="listTenants",
    responses=response_doc(TenantList),
)
async def list_tenants(
    store: StoreDep,
    principal: PrincipalDep,
    include_deleted: Annotated[
        bool, Query(description="Also list soft-deleted tenants (in `deleted`).")
    ] = False,
) -> Response:
    """Every live tenant the token has a right on (and the soft-deleted ones, if asked)."""
    if not include_deleted:
        return respond({"tenants": [t for t in await store.tenants() if principal.sees(t)]})
    states = await tenant_states(store, include_deleted=True)
    seen = [s for s in states if principal.sees(s.tenant)]
    return respond({
        "tenants": [s.tenant for s in seen if s.state == "live"],
        "deleted": [s.tenant for s in seen if s.state == "deleted"],
        "states": seen,
    })  # fmt: skip


@router.post(
    "",
    status_code=201,
    summary="Create a tenant: empty, from a template, or as a clone",
    openapi_extra=body_doc(TenantCreate),
    operation_id="createTenant",
    responses=response_doc(TenantCreated, 201),
)
async def create_tenant(request: Request, store: StoreDep, principal: PrincipalDep) -> Response:
    """Needs admin on the new tenant (a global admin, or a token granted it ahead)."""
    body: TenantCreate = decode(await request.body(), TenantCreate)
    validate_tenant(body.name)
    if not principal.can(body.name, "admin"):
        raise Forbidden(f"creating {body.name!r} needs admin on it", tenant=body.name)
    if body.template is not None and body.clone_from is not None:
        raise InvalidInput("give template or clone_from, not both", field="template")
    source = body.clone_from or body.template
    if source is not None:
        check_access(principal, source, "read")
        if not principal.can(source, "secrets"):
            raise Forbidden(f"copying {source!r} needs the secrets right on it", tenant=source)
    client = request.client.host if request.client else "unknown"
    try:
        revision = await provision(
            store, body.name, source=source, whole=body.clone_from is not None,
            overrides=body.overrides, actor=f"{principal.name}@{client}",
            reason=body.reason or change_reason(request.headers.get("x-change-reason", "")),
        )  # fmt: skip
    finally:
        note_write(request, body.name, None)
    request.app.state.metrics.writes.labels("tenant").inc()
    how = "cloned from" if body.clone_from else "created from template" if source else "created"
    log.info("tenant %s %s%s by %s", body.name, how, f" {source}" if source else "",
             principal.name)  # fmt: skip
    return respond({"tenant": body.name, "revision": revision}, status=201)


@router.get(
    "/{tenant}",
    summary="A tenant's revision, epoch and namespaces",
    operation_id="getTenant",
    responses=response_doc(TenantInfo),
)
async def tenant_info(access: ViewAccess) -> Response:
    """404 for unknown or deleted tenants; namespaces the caller sees only."""
    info = await access.store.info(access.tenant)
    if access.visible is not None:
        info = msgspec.structs.replace(
            info, namespaces=[n for n in info.namespaces if access.shows(n)]
        )
    return respond(info)


async def _snapshot_first(store: Store, tenant: str) -> dict[str, Any] | None:
    """Save a snapshot of the tenant before a hard delete."""
    try:
        info = await snapshot.save(store, None, [tenant], label=f"before-delete-{tenant}")
    except OSError as exc:
        raise Unavailable(f"could not save the snapshot first: {exc.strerror}") from exc
    return {"path": str(info.path), "created_at": info.created_at}


@router.delete(
    "/{tenant}",
    summary="Delete a tenant (soft by default; hard after a snapshot)",
    operation_id="deleteTenant",
    responses=response_doc((TenantDeleted, TenantDeletePreview)),
)
async def delete_tenant(
    access: AdminAccess,
    request: Request,
    hard: Annotated[
        bool, Query(description="Remove every key (a snapshot is saved first).")
    ] = False,
    dry_run: DryRun = False,
) -> Response:
    """A soft delete hides values and refuses writes; ``undelete`` brings it back."""
    if dry_run:
        info = await access.store.info(access.tenant)
        return respond({
            "dry_run": True, "would_commit": True, "tenant": access.tenant,
            "deleted": "hard" if hard else "soft", "revision": info.revision,
            "namespaces": info.namespaces,
        })  # fmt: skip
    snap = None
    if hard and not await access.store.is_deleted(access.tenant):  # a soft-deleted one was saved
        snap = await _snapshot_first(access.store, access.tenant)
    try:
        await access.store.delete_tenant(
            access.tenant, hard=hard, actor=access.actor, reason=access.why()
        )
    finally:
        note_write(request, access.tenant, None)
    request.app.state.metrics.writes.labels("tenant").inc()
    log.info("tenant %s deleted (%s) by %s", access.tenant, "hard" if hard else "soft",
             access.principal.name)  # fmt: skip
    return respond(
        {"tenant": access.tenant, "deleted": "hard" if hard else "soft", "snapshot": snap}
    )


@router.post(
    "/{tenant}/undelete",
    summary="Bring back a soft-deleted tenant",
    operation_id="undeleteTenant",
    responses=response_doc((TenantUndeleted, TenantUndeletePreview)),
)
async def undelete_tenant(
    access: AdminAccess, request: Request, dry_run: DryRun = False
) -> Response:
    """All values come back as they were."""
    if dry_run:
        deleted = await access.store.is_deleted(access.tenant)
        return respond({"dry_run": True, "would_commit": deleted, "tenant": access.tenant})
    try:
        await access.store.undelete_tenant(access.tenant, actor=access.actor, reason=access.why())
    finally:
        note_write(request, access.tenant, None)
    request.app.state.metrics.writes.labels("tenant").inc()
    log.info("tenant %s undeleted by %s", access.tenant, access.principal.name)
    return respond({"tenant": access.tenant, "deleted": False})
