"""Namespaces and keys: read, write (ETag / If-Match CAS), atomic change sets, deletes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf.models import Entry, WriteResult
from kvconf.timeline import KeyState, state_at

from ..deps import IfMatch, Masker, ReadAccess, WriteAccess, masker
from ..models import (
    ChangeSet,
    EntryDoc,
    KeyWrite,
    Written,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..preview import preview

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/tenants/{tenant}/namespaces", tags=["keys"])
Namespace = Annotated[str, PathParam(description="Namespace name (`_defaults`: tenant-wide).")]
Key = Annotated[str, PathParam(description="Key name.")]
DryRun = Annotated[bool, Query(description="Validate and return the diff without committing.")]


def entry_doc(key: str, entry: Entry | KeyState, mask: Masker) -> dict[str, Any]:
    """The JSON of one entry, masked for callers without the secrets right."""
    return {
        "key": key,
        "value": mask(key, entry.value),
        "version": entry.version,
        "revision": entry.revision,
        "updated_at": entry.updated_at,
        "updated_by": entry.updated_by,
    }


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _written(request: Request, result: WriteResult, kind: str) -> dict[str, Any]:
    request.app.state.metrics.writes.labels(kind).inc()
    return {"revision": result.revision, "epoch": result.epoch, "versions": result.versions}


@router.get("", summary="List a tenant's namespaces")
async def list_namespaces(access: ReadAccess) -> Response:
    """Names of every namespace ever written."""
    names = await access.store.namespaces(access.tenant)
    return respond({"tenant": access.tenant, "namespaces": names})


@router.get("/{namespace}", summary="Read a namespace (optionally as of a revision)")
async def get_namespace(
    namespace: Namespace,
    access: ReadAccess,
    at_revision: Annotated[int | None, Query(ge=0, description="Time travel.")] = None,
) -> Response:
    """Every key with value, version, revision, updated_at and updated_by."""
    store = access.store
    if at_revision is not None:
        point = await state_at(store, access.tenant, at_revision, [namespace])
        entries: dict[str, Any] = point.namespaces.get(namespace, {})
        revision = at_revision
    else:
        state = await store.read_state(access.tenant, [namespace])
        entries = state.namespaces.get(namespace, {})
        revision = state.revision
    mask = await masker(access, namespace)
    return respond(
        {
            "tenant": access.tenant,
            "namespace": namespace,
            "revision": revision,
            "keys": {k: entry_doc(k, e, mask) for k, e in sorted(entries.items())},
        }
    )


@router.post(
    "/{namespace}",
    summary="Atomic multi-key write (set and delete) of one namespace",
    openapi_extra=body_doc(ChangeSet),
    responses=response_doc(Written),
)
async def commit(
    namespace: Namespace, request: Request, access: WriteAccess, dry_run: DryRun = False
) -> Response:
    """One change set, one revision; ``expect`` mismatches are a 409 and write nothing."""
    body: ChangeSet = decode(await request.body(), ChangeSet)
    if dry_run:
        return respond(await preview(access, namespace, body.values, body.deletes, body.expect))
    result = await access.store.commit(
        access.tenant, namespace, body.values, deletes=body.deletes, expect=body.expect,
        actor=access.actor, reason=access.why(body.reason),
    )  # fmt: skip
    return respond(_written(request, result, "change_set"))


@router.get("/{namespace}/effective", summary="Effective config with layers")
async def effective(
    namespace: Namespace,
    access: ReadAccess,
    explain: Annotated[bool, Query(description="Show winning layer and shadows.")] = False,
) -> Response:
    """Resolved values: namespace > tenant ``_defaults`` > environment > schema default."""
    explained = await access.store.explain(access.tenant, namespace)
    mask = await masker(access, namespace)
    if not explain:
        values = {k: mask(k, e.value) for k, e in explained.items()}
        return respond({"tenant": access.tenant, "namespace": namespace, "values": values})
    keys = {
        k: {
            "value": mask(k, e.value),
            "layer": e.layer,
            "shadowed": [{"layer": s.layer, "value": mask(k, s.value)} for s in e.shadowed],
        }
        for k, e in explained.items()
    }
    return respond({"tenant": access.tenant, "namespace": namespace, "keys": keys})


@router.get(
    "/{namespace}/keys/{key}",
    summary="Read one key (ETag: its version)",
    responses=response_doc(EntryDoc),
)
async def get_key(namespace: Namespace, key: Key, access: ReadAccess) -> Response:
    """The key's value and metadata; the ``ETag`` header is its version."""
    entry = await access.store.get(access.tenant, namespace, key)
    mask = await masker(access, namespace)
    return respond(entry_doc(key, entry, mask), headers=_etag(entry.version))


async def _expected(
    access: WriteAccess, namespace: str, key: str, expect: int | None
) -> int | None:
    if expect == -1:  # If-Match: * → the key must exist, at whatever version
        return (await access.store.get(access.tenant, namespace, key)).version
    return expect


@router.put(
    "/{namespace}/keys/{key}",
    summary="Write one key (If-Match / If-None-Match: * for CAS)",
    openapi_extra=body_doc(KeyWrite),
    responses=response_doc(Written),
)
async def put_key(
    namespace: Namespace,
    key: Key,
    request: Request,
    access: WriteAccess,
    expect: IfMatch,
    dry_run: DryRun = False,
) -> Response:
    """A precondition mismatch is a 412 with the current version as ``ETag``."""
    body: KeyWrite = decode(await request.body(), KeyWrite)
    expect = await _expected(access, namespace, key, expect)
    if dry_run:
        expects = {} if expect is None else {key: expect}
        return respond(await preview(access, namespace, {key: body.value}, [], expects))
    result = await access.store.set(
        access.tenant, namespace, key, body.value, expect_version=expect,
        actor=access.actor, reason=access.why(body.reason),
    )  # fmt: skip
    doc = _written(request, result, "key")
    status = 201 if result.versions[key] == 1 else 200
    return respond(doc, status=status, headers=_etag(result.versions[key]))


@router.delete("/{namespace}/keys/{key}", summary="Delete one key (a tombstone version)")
async def delete_key(
    namespace: Namespace, key: Key, request: Request, access: WriteAccess, expect: IfMatch
) -> Response:
    """Honours ``If-Match``; deleting a missing key is a 404."""
    expect = await _expected(access, namespace, key, expect)
    expects = None if expect is None else {key: expect}
    result = await access.store.delete(
        access.tenant, namespace, key, expect=expects, actor=access.actor, reason=access.why()
    )
    return respond(_written(request, result, "delete"), headers=_etag(result.versions[key]))
