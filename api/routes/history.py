"""History: per-key versions, the tenant change log, diffs, rollbacks, time travel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf import timeline
from kvconf._store.plan import plan_across
from kvconf.store import tenant_keys

from ..deps import (
    Access,
    DryRun,
    Masker,
    ReadAccess,
    ViewAccess,
    WriteAccess,
    access_to,
    check_access,
    masker,
    note_write,
)
from ..models import (
    ChangeLog,
    DiffDoc,
    KeyHistory,
    KeyRollback,
    KeyRolledBack,
    Preview,
    RollbackPreview,
    TenantRollback,
    TenantRolledBack,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..preview import preview
from ..query import refuse_unknown_query

__all__ = ["mask_event", "router", "visible_event"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["history"],
    dependencies=[Depends(refuse_unknown_query)],
)
Namespace = Annotated[str, PathParam(description="Namespace name.")]
Key = Annotated[str, PathParam(description="Key name.")]
Revision = Annotated[int, Query(ge=0, description="A tenant revision.")]


async def _maskers(access: Access, namespaces: set[str]) -> dict[str, Masker]:
    return {ns: await masker(access, ns) for ns in namespaces}


def _mask_state(state: timeline.KeyState | None, key: str, mask: Masker) -> Any:
    if state is None:
        return None
    doc = msgspec.to_builtins(state)
    doc["value"] = mask(key, state.value)
    return doc


def visible_event(
    event: timeline.LogEvent, shows: Callable[[str], bool] | None
) -> timeline.LogEvent | None:
    """``event`` as a caller seeing the namespaces ``shows`` accepts may see it.

    None when it touches no visible namespace; a change set across
    namespaces keeps only the visible namespaces' changes; events of the
    whole tenant (``reset``, ``tenant``) are shown. ``shows`` None: all.
    """
    if shows is None:
        return event
    if not event.changes:
        if event.namespace in ("", "*") or event.type not in ("change", "schema"):
            return event
        return event if shows(event.namespace) else None
    changes = [c for c in event.changes if shows(event.namespace_of(c))]
    if not changes:
        return None
    if len(changes) == len(event.changes):
        return event
    return msgspec.structs.replace(event, changes=changes)


async def mask_event(access: Access, event: timeline.LogEvent) -> dict[str, Any]:
    """A log record as JSON, sensitive values masked for this caller."""
    doc: dict[str, Any] = msgspec.to_builtins(event)
    if access.secrets or not event.changes:
        return doc
    masks: dict[str, Masker] = {}
    for change, raw in zip(doc["changes"], event.changes, strict=True):
        ns = event.namespace_of(raw)  # a change set across namespaces names each one
        mask = masks.get(ns)
        if mask is None:
            mask = masks[ns] = await masker(access, ns)
        change["value"] = mask(change["key"], change["value"])
    return doc


@router.get(
    "/namespaces/{namespace}/keys/{key}/history",
    summary="Versions of a key (paged)",
    operation_id="getKeyHistory",
    responses=response_doc(KeyHistory),
)
async def key_history(
    namespace: Namespace,
    key: Key,
    access: ReadAccess,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    before: Annotated[int | None, Query(ge=1, description="Page: versions below this.")] = None,
) -> Response:
    """Newest first; pass ``before=<next_before>`` for the next page."""
    versions = await access.store.history(access.tenant, namespace, key, limit=limit, before=before)
    mask = await masker(access, namespace)
    items = []
    for v in versions:
        doc = msgspec.to_builtins(v)
        doc["value"] = mask(key, v.value)
        items.append(doc)
    next_before = (
        versions[-1].version if len(versions) == limit and versions[-1].version > 1 else None
    )
    return respond({"key": key, "versions": items, "next_before": next_before})


@router.post(
    "/namespaces/{namespace}/keys/{key}/rollback",
    summary="Make an old version of a key current again (a new version)",
    openapi_extra=body_doc(KeyRollback),
    operation_id="rollbackKey",
    responses=response_doc((KeyRolledBack, Preview)),
)
async def rollback_key(
    namespace: Namespace, key: Key, request: Request, access: WriteAccess, dry_run: DryRun = False
) -> Response:
    """Audited like any write; the old value is checked against today's schema.

    ``?dry_run=true`` returns the diff the rollback would commit, with the
    same checks and errors, and writes nothing.
    """
    body: KeyRollback = decode(await request.body(), KeyRollback)
    if dry_run:
        target = await access.store.version(access.tenant, namespace, key, body.to_version)
        expect = {} if body.expect_version is None else {key: body.expect_version}
        values = {} if target.deleted else {key: target.value}
        deletes = [key] if target.deleted else []
        return respond(await preview(access, namespace, values, deletes, expect, body.reason))
    result = await access.store.rollback(
        access.tenant, namespace, key, body.to_version, expect_version=body.expect_version,
        actor=access.actor, reason=access.why(body.reason),
    )  # fmt: skip
    request.app.state.metrics.rollbacks.labels("key").inc()
    note_write(request, access.tenant, result)
    return respond(
        {"revision": result.revision, "epoch": result.epoch, "versions": result.versions},
        headers={"ETag": f'"{result.versions[key]}"'},
    )


@router.get(
    "/log",
    summary="The tenant change log since a revision",
    operation_id="getChangeLog",
    responses=response_doc(ChangeLog),
)
async def change_log(
    access: ViewAccess,
    since: Revision = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Records after ``since``, oldest first; 410 when the log was trimmed past it.

    A namespace-scoped token sees only its namespaces' changes (a page may
    then hold fewer than ``limit`` events, even none). ``next_since`` is the
    ``since`` of the next page, null when this page reached the end of the log.
    """
    events = await timeline.read_log(access.store, access.tenant, since, limit=limit)
    shown = [v for v in (visible_event(e, access.visible) for e in events) if v is not None]
    items = [await mask_event(access, e) for e in shown]
    next_since = events[-1].revision if len(events) == limit else None
    return respond(
        {"tenant": access.tenant, "since": since, "events": items, "next_since": next_since}
    )


async def _diff(
    access: Access, from_revision: int, to_revision: int | None, namespace: str | None
) -> Response:
    result = await timeline.diff(
        access.store, access.tenant, from_revision, to_revision, namespace=namespace
    )
    shown = [c for c in result.changes if access.shows(c.namespace)]
    maskers = await _maskers(access, {c.namespace for c in shown})
    changes = [
        {
            "namespace": c.namespace,
            "key": c.key,
            "change": c.change,
            "old": _mask_state(c.old, c.key, maskers[c.namespace]),
            "new": _mask_state(c.new, c.key, maskers[c.namespace]),
        }
        for c in shown
    ]
    return respond(
        {
            "tenant": access.tenant,
            "namespace": namespace,
            "from_revision": result.from_revision,
            "to_revision": result.to_revision,
            "changes": changes,
        }
    )


@router.get(
    "/diff",
    summary="Diff of the tenant between two revisions",
    operation_id="diffTenant",
    responses=response_doc(DiffDoc),
)
async def tenant_diff(
    access: ViewAccess,
    from_revision: Annotated[int, Query(alias="from", ge=0)],
    to_revision: Annotated[int | None, Query(alias="to", ge=0)] = None,
) -> Response:
    """Every key that differs between ``from`` and ``to`` (default: now)."""
    return await _diff(access, from_revision, to_revision, None)


@router.get(
    "/namespaces/{namespace}/diff",
    summary="Diff of a namespace between two revisions",
    operation_id="diffNamespace",
    responses=response_doc(DiffDoc),
)
async def namespace_diff(
    namespace: Namespace,
    access: ReadAccess,
    from_revision: Annotated[int, Query(alias="from", ge=0)],
    to_revision: Annotated[int | None, Query(alias="to", ge=0)] = None,
) -> Response:
    """Every key of the namespace that differs between ``from`` and ``to``."""
    return await _diff(access, from_revision, to_revision, namespace)


@router.post(
    "/rollback",
    summary="Roll a namespace or the tenant back to a revision",
    openapi_extra=body_doc(TenantRollback),
    operation_id="rollbackTenant",
    responses=response_doc((TenantRolledBack, RollbackPreview)),
)
async def rollback_tenant(
    request: Request,
    access: Annotated[Access, Depends(access_to("write", filtered=True))],
    dry_run: DryRun = False,
) -> Response:
    """One new revision, atomic with CAS on every key (across namespaces for a tenant).

    A namespace needs the write right; the whole tenant needs admin. The
    commit's ``namespace`` is ``"*"`` when it spans namespaces, and its
    versions name keys ``namespace/key``. ``?dry_run=true`` returns each
    namespace's diff instead and writes nothing.
    """
    body: TenantRollback = decode(await request.body(), TenantRollback)
    if body.namespace is None:
        check_access(access.principal, access.tenant, "admin")
    else:
        access.require(body.namespace, "write")
    if dry_run:
        plans = await timeline.rollback_plans(
            access.store, access.tenant, body.to_revision, namespace=body.namespace
        )
        if len(plans) > 1:  # committed as one change set across namespaces: its limits
            plan_across(
                tenant_keys(access.tenant),
                {p.namespace: p.values for p in plans if p.values},
                {p.namespace: p.deletes for p in plans if p.deletes},
                {p.namespace: p.expect for p in plans},
                max_keys=access.store.settings.max_keys_per_write,
                max_value_bytes=access.store.settings.max_value_bytes,
            )
        previews = [
            await preview(access, p.namespace, p.values, p.deletes, p.expect, body.reason)
            for p in plans
        ]
        return respond({
            "dry_run": True, "tenant": access.tenant, "to_revision": body.to_revision,
            "would_commit": all(p["would_commit"] for p in previews), "namespaces": previews,
        })  # fmt: skip
    try:
        results = await timeline.rollback(
            access.store, access.tenant, body.to_revision, namespace=body.namespace,
            actor=access.actor, reason=access.why(body.reason),
        )  # fmt: skip
    finally:
        note_write(request, access.tenant, None)  # may span namespaces: a fresh watcher
    request.app.state.metrics.rollbacks.labels("namespace" if body.namespace else "tenant").inc()
    return respond(
        {
            "tenant": access.tenant,
            "to_revision": body.to_revision,
            "commits": [
                {
                    "namespace": r.namespace,
                    "revision": r.revision,
                    "epoch": r.epoch,
                    "versions": r.versions,
                }
                for r in results
            ],
        }
    )
