"""Change sets across namespaces: one atomic write of several namespaces of a tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from ..deps import Access, DryRun, access_to, note_write
from ..models import (
    ChangeSetAcross,
    ChangesPreview,
    Written,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..preview import preview_across
from ..query import refuse_unknown_query

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["keys"],
    dependencies=[Depends(refuse_unknown_query)],
)


@router.post(
    "/changes",
    summary="Atomic change set across namespaces (one revision)",
    openapi_extra=body_doc(ChangeSetAcross),
    responses=response_doc((Written, ChangesPreview)),
    operation_id="commitChanges",
)
async def commit_changes(
    request: Request,
    access: Annotated[Access, Depends(access_to("write", filtered=True))],
    dry_run: DryRun = False,
) -> Response:
    """Set and delete keys of several namespaces atomically: one revision, all or nothing.

    Every namespace named (in ``values``, ``deletes`` or ``expect``) needs
    the write right: one the token does not see is a 404, as everywhere. An
    ``expect`` mismatch is a 409 whose conflicts name keys ``namespace/key``
    and writes nothing; so do the result's ``versions``. ``?dry_run=true``
    makes every check the write makes and returns each namespace's diff,
    read at one revision.
    """
    body: ChangeSetAcross = decode(await request.body(), ChangeSetAcross)
    for namespace in sorted({*body.values, *body.deletes, *body.expect}):
        access.require(namespace, "write")
    if dry_run:
        return respond(
            await preview_across(
                access, body.values, body.deletes, body.expect, body.reason, create=body.create
            )
        )
    result = await access.store.commit_across(
        access.tenant, body.values, deletes=body.deletes, expect=body.expect,
        actor=access.actor, reason=access.why(body.reason), create=body.create,
    )  # fmt: skip
    request.app.state.metrics.wrote("change_set_across")
    note_write(request, access.tenant, result)
    return respond(
        {"revision": result.revision, "epoch": result.epoch, "versions": result.versions}
    )
