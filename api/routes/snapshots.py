"""Snapshots of one tenant: list, save, verify, restore (server-side files, tenant-scoped).

A snapshot file may hold several tenants; these routes only ever show and
restore the path's tenant, so a tenant admin sees nothing of the others.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf import snapshot
from kvconf.exceptions import SnapshotCorrupt, SnapshotNotFound, Unavailable

from ..deps import Access, AdminAccess, note_write
from ..models import (
    Restored,
    SnapshotList,
    SnapshotSaved,
    SnapshotVerified,
    respond,
    response_doc,
)
from ..query import refuse_unknown_query

__all__ = ["router"]

log = logging.getLogger("kvconf.api")
router = APIRouter(
    prefix="/api/v1/tenants/{tenant}/snapshots",
    tags=["snapshots"],
    dependencies=[Depends(refuse_unknown_query)],
)
Name = Annotated[str, PathParam(description="Snapshot file name, as listed.")]


def _directory(access: Access) -> Path:
    return snapshot.default_dir(access.store)


def _doc(info: snapshot.SnapshotInfo, tenant: str) -> dict[str, Any] | None:
    mine = [t for t in info.tenants if t.tenant == tenant]
    if not mine:
        return None
    return {
        "name": Path(info.path).name,
        "created_at": info.created_at,
        "label": info.label,
        "tenant": mine[0],
        "format": info.format,
        # another tenant's part of the file is none of this caller's business
        "size": info.size if len(mine) == len(info.tenants) else None,
    }


async def _list(access: Access) -> list[dict[str, Any]]:
    found = await asyncio.to_thread(snapshot.list_snapshots, _directory(access))
    docs = (_doc(info, access.tenant) for info in found)
    return [d for d in docs if d is not None]


@router.get(
    "",
    summary="Snapshots that hold this tenant",
    operation_id="listSnapshots",
    responses=response_doc(SnapshotList),
)
async def list_tenant_snapshots(access: AdminAccess) -> Response:
    """Newest last; only this tenant's part of each file is described."""
    return respond({"tenant": access.tenant, "snapshots": await _list(access)})


@router.post(
    "",
    status_code=201,
    summary="Save a snapshot of this tenant",
    operation_id="saveSnapshot",
    responses=response_doc(SnapshotSaved, 201),
)
async def save_tenant_snapshot(
    access: AdminAccess,
    label: Annotated[str, Query(max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")] = "",
) -> Response:
    """Written safely (temporary file, fsync, rename) under ``<data_dir>/snapshots``."""
    try:
        info = await snapshot.save(access.store, None, [access.tenant], label=label)
    except OSError as exc:
        raise Unavailable(f"could not write the snapshot: {exc.strerror}") from exc
    doc = _doc(info, access.tenant)
    assert doc is not None  # saved with this tenant
    return respond(doc, status=201)


def _damaged(name: str, exc: SnapshotCorrupt) -> SnapshotCorrupt:
    """A damaged file, told without the server's path or what else the file holds.

    The details (path, offending tenant) go to the server's log.
    """
    log.warning("snapshot %s failed its checks: %s", name, exc.message)
    return SnapshotCorrupt(f"snapshot {name!r} is damaged: it fails its checks")


async def _require(access: Access, name: str) -> None:
    """404 unless ``name`` is a listed snapshot that holds this tenant."""
    names = {d["name"] for d in await _list(access)}
    if name not in names:
        raise SnapshotNotFound(f"no snapshot {name!r} holds {access.tenant!r}", name=name)


@router.post(
    "/{name}/verify",
    summary="Check a snapshot's checksum and contents",
    operation_id="verifySnapshot",
    responses=response_doc(SnapshotVerified),
)
async def verify_tenant_snapshot(name: Name, access: AdminAccess) -> Response:
    """Reads the whole file (format, checksum, every record); 422 when it is corrupt."""
    await _require(access, name)
    try:
        info = await asyncio.to_thread(snapshot.verify, _directory(access) / name)
    except OSError as exc:
        raise Unavailable(f"could not read the snapshot: {exc.strerror}") from exc
    except SnapshotCorrupt as exc:
        raise _damaged(name, exc) from exc
    doc = _doc(info, access.tenant)
    assert doc is not None  # _require found this tenant in the file
    return respond({**doc, "verified": info.verified})


@router.post(
    "/{name}/restore",
    summary="Restore this tenant from a snapshot",
    operation_id="restoreSnapshot",
    responses=response_doc(Restored),
)
async def restore_tenant_snapshot(
    name: Name,
    request: Request,
    access: AdminAccess,
    mode: Annotated[Literal["replace", "merge"], Query()] = "replace",
    dry_run: Annotated[bool, Query()] = False,
) -> Response:
    """A safety snapshot is saved first; watchers get a ``reset`` event."""
    await _require(access, name)
    try:
        report = await snapshot.restore(
            access.store, _directory(access) / name, tenants=[access.tenant], mode=mode,
            dry_run=dry_run, actor=access.actor, reason=access.why(),
        )  # fmt: skip
    except OSError as exc:
        raise Unavailable(f"could not read the snapshot: {exc.strerror}") from exc
    except SnapshotCorrupt as exc:
        raise _damaged(name, exc) from exc
    finally:
        if not dry_run:
            note_write(request, access.tenant, None)
    if not dry_run:
        request.app.state.metrics.writes.labels("restore").inc()
        log.info("tenant %s restored from snapshot %s (%s) by %s", access.tenant, name, mode,
                 access.principal.name)  # fmt: skip
    return respond({"tenant": access.tenant, "dry_run": report.dry_run, "restored": report.tenants})
