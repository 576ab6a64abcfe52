"""Namespaces and keys: read, write (ETag / If-Match CAS), atomic change sets, deletes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf.models import Entry, WriteResult
from kvconf.timeline import KeyState, state_at

from ..cache import namespace_entries, stale_headers
from ..deps import (
    Access,
    DryRun,
    IfMatch,
    Masker,
    ReadAccess,
    ViewAccess,
    WriteAccess,
    cached_reader,
    expected_version,
    masker,
    note_write,
    resolve_access,
)
from ..hot import hot
from ..models import (
    ChangeSet,
    EffectiveExplained,
    EffectiveValues,
    EntryDoc,
    KeyWrite,
    NamespaceDoc,
    NamespaceList,
    Preview,
    Written,
    body_doc,
    decode,
    respond,
    response_doc,
)
from ..preview import preview
from ..query import refuse_unknown_query

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}/namespaces",
    tags=["keys"],
    dependencies=[Depends(refuse_unknown_query)],
)
Namespace = Annotated[str, PathParam(description="Namespace name (`_defaults`: tenant-wide).")]
Key = Annotated[str, PathParam(description="Key name.")]


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


def _written(request: Request, tenant: str, result: WriteResult, kind: str) -> dict[str, Any]:
    request.app.state.metrics.wrote(kind)
    note_write(request, tenant, result)
    return {"revision": result.revision, "epoch": result.epoch, "versions": result.versions}


Consistent = Annotated[
    bool,
    Query(
        description="Read from Redis, not this process's cache (also: `Cache-Control: no-cache`)."
    ),
]


@router.get(
    "",
    summary="List a tenant's namespaces",
    operation_id="listNamespaces",
    responses=response_doc(NamespaceList),
)
async def list_namespaces(access: ViewAccess) -> Response:
    """Names of every namespace ever written (that the caller sees)."""
    names = [n for n in await access.store.namespaces(access.tenant) if access.shows(n)]
    return respond({"tenant": access.tenant, "namespaces": names})


@router.get(
    "/{namespace}",
    summary="Read a namespace (optionally as of a revision)",
    operation_id="getNamespace",
    responses=response_doc(NamespaceDoc),
)
async def get_namespace(
    namespace: Namespace,
    request: Request,
    access: ReadAccess,
    at_revision: Annotated[int | None, Query(ge=0, description="Time travel.")] = None,
    consistent: Consistent = False,
    category: Annotated[
        str | None, Query(description="Only keys whose schema puts them in this category.")
    ] = None,
) -> Response:
    """Every key with value, version, revision, updated_at and updated_by."""
    store = access.store
    cache, watcher = cached_reader(request, access.tenant)
    entries: Mapping[str, Any]
    if category is not None:
        # Categories live in the schema: filter on today's specs (rare, never the hot path).
        specs = await store.specs(access.tenant, namespace)
        if at_revision is not None:
            point = await state_at(store, access.tenant, at_revision, [namespace])
            entries, revision = point.namespaces.get(namespace, {}), at_revision
        else:
            state = await store.read_state(access.tenant, [namespace])
            entries, revision = state.namespaces.get(namespace, {}), state.revision
        entries = {k: e for k, e in entries.items()
                   if (spec := specs.get(k)) is not None and spec.category == category}  # fmt: skip
        request.app.state.metrics.read(False)
        return _namespace_doc(access, namespace, revision, entries, await masker(access, namespace))
    if at_revision is not None:
        point = await state_at(store, access.tenant, at_revision, [namespace])
        entries = point.namespaces.get(namespace, {})
        revision = at_revision
    elif watcher is not None:
        entries = namespace_entries(watcher, namespace)
        revision = watcher.revision
        assert cache is not None
        mask = Masker(None if access.secrets else cache.specs(watcher, namespace))
        request.app.state.metrics.read(True)
        return _namespace_doc(access, namespace, revision, entries, mask, stale_headers(watcher))
    else:
        state = await store.read_state(access.tenant, [namespace])
        entries = state.namespaces.get(namespace, {})
        revision = state.revision
        if cache is not None:
            cache.saw(access.tenant, state.epoch, revision)
            cache.found(access.tenant)
    request.app.state.metrics.read(False)
    mask = await masker(access, namespace)
    return _namespace_doc(access, namespace, revision, entries, mask)


def _namespace_doc(
    access: Access,
    namespace: str,
    revision: int,
    entries: Mapping[str, Any],
    mask: Masker,
    headers: dict[str, str] | None = None,
) -> Response:
    return respond(
        {
            "tenant": access.tenant,
            "namespace": namespace,
            "revision": revision,
            "keys": {k: entry_doc(k, e, mask) for k, e in sorted(entries.items())},
        },
        headers=headers,
    )


@router.post(
    "/{namespace}",
    summary="Atomic multi-key write (set and delete) of one namespace",
    openapi_extra=body_doc(ChangeSet),
    responses=response_doc((Written, Preview)),
    operation_id="commitChangeSet",
)
async def commit(
    namespace: Namespace, request: Request, access: WriteAccess, dry_run: DryRun = False
) -> Response:
    """One change set, one revision; ``expect`` mismatches are a 409 and write nothing."""
    body: ChangeSet = decode(await request.body(), ChangeSet)
    if dry_run:
        return respond(
            await preview(access, namespace, body.values, body.deletes, body.expect, body.reason)
        )
    result = await access.store.commit(
        access.tenant, namespace, body.values, deletes=body.deletes, expect=body.expect,
        actor=access.actor, reason=access.why(body.reason),
    )  # fmt: skip
    return respond(_written(request, access.tenant, result, "change_set"))


@router.get(
    "/{namespace}/effective",
    summary="Effective config with layers",
    operation_id="getEffective",
    responses=response_doc((EffectiveValues, EffectiveExplained)),
)
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
    operation_id="getKey",
)
async def get_key(
    namespace: Namespace,
    key: Key,
    request: Request,
    access: ReadAccess,
    consistent: Consistent = False,
) -> Response:
    """The key's value and metadata; the ``ETag`` header is its version.

    Served from this process's watcher of the tenant when it is in step (see
    ``api/cache.py``), else from Redis.
    """
    return await read_key(request, access, namespace, key)


async def read_key(request: Request, access: Access, namespace: str, key: str) -> Response:
    """GET of one key: from the read cache when it may answer, else one HGET."""
    cache, watcher = cached_reader(request, access.tenant)
    if watcher is not None:
        entry = watcher.entry(namespace, key)
        if entry is not None:
            assert cache is not None
            mask = Masker(None if access.secrets else cache.specs(watcher, namespace))
            request.app.state.metrics.read(True)
            headers = stale_headers(watcher, _etag(entry.version))
            return respond(entry_doc(key, entry, mask), headers=headers)
    request.app.state.metrics.read(False)
    # A miss goes to Redis: it tells an unknown key from an unknown tenant.
    found = await access.store.get(access.tenant, namespace, key)
    if cache is not None:
        cache.saw(access.tenant, None, found.revision)
        cache.found(access.tenant)
    mask = await masker(access, namespace)
    return respond(entry_doc(key, found, mask), headers=_etag(found.version))


async def _get_key_hot(request: Request) -> Response | None:
    if request.scope["query_string"]:
        return None  # ?consistent=...: FastAPI's validation
    params = request.path_params
    access = await resolve_access(request, params["tenant"], "read", params["namespace"])
    return await read_key(request, access, params["namespace"], params["key"])


hot(router, get_key, _get_key_hot)


@router.put(
    "/{namespace}/keys/{key}",
    summary="Write one key (If-Match / If-None-Match: * for CAS)",
    openapi_extra=body_doc(KeyWrite),
    responses=response_doc((Written, Preview), also=(201,)),
    operation_id="putKey",
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
    if dry_run:
        expects = {} if expect is None else {key: expect}
        return respond(
            await preview(access, namespace, {key: body.value}, [], expects, body.reason)
        )
    return await write_key(request, access, namespace, key, body, expect)


async def write_key(
    request: Request, access: Access, namespace: str, key: str, body: KeyWrite, expect: int | None
) -> Response:
    """PUT of one key: one atomic write (a CAS when ``expect`` is set)."""
    result = await access.store.set(
        access.tenant, namespace, key, body.value, expect_version=expect,
        actor=access.actor, reason=access.why(body.reason),
    )  # fmt: skip
    doc = _written(request, access.tenant, result, "key")
    status = 201 if result.versions[key] == 1 else 200
    return respond(doc, status=status, headers=_etag(result.versions[key]))


async def _put_key_hot(request: Request) -> Response | None:
    if request.scope["query_string"]:
        return None  # dry runs and odd parameters: FastAPI's validation
    params = request.path_params
    access = await resolve_access(request, params["tenant"], "write", params["namespace"])
    headers = request.headers
    expect = expected_version(request, headers.get("if-match"), headers.get("if-none-match"))
    body: KeyWrite = decode(await request.body(), KeyWrite)
    namespace, key = params["namespace"], params["key"]
    return await write_key(request, access, namespace, key, body, expect)


hot(router, put_key, _put_key_hot)


@router.delete(
    "/{namespace}/keys/{key}",
    summary="Delete one key (a tombstone version)",
    operation_id="deleteKey",
    responses=response_doc((Written, Preview)),
)
async def delete_key(
    namespace: Namespace,
    key: Key,
    request: Request,
    access: WriteAccess,
    expect: IfMatch,
    dry_run: DryRun = False,
) -> Response:
    """Honours ``If-Match``; deleting a missing key is a 404."""
    expects = None if expect is None else {key: expect}
    if dry_run:
        return respond(await preview(access, namespace, {}, [key], expects or {}))
    result = await access.store.delete(
        access.tenant, namespace, key, expect=expects, actor=access.actor, reason=access.why()
    )
    doc = _written(request, access.tenant, result, "delete")
    return respond(doc, headers=_etag(result.versions[key]))
