"""Schemas: read and replace a tenant's (``_defaults``) or a namespace's schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf._redis.names import DEFAULTS_NAMESPACE, validate_namespace
from kvconf.exceptions import NotFound, TenantNotFound
from kvconf.models import Schema
from kvconf.schema import decode_schema_document, effective_specs, masked_schema

from ..deps import Access, AdminAccess, DryRun, ReadAccess, ViewAccess, note_write
from ..errors import Forbidden
from ..models import (
    Revision,
    SchemaBody,
    SchemaPreview,
    Schemas,
    SchemaSet,
    body_doc,
    respond,
    response_doc,
)
from ..query import refuse_unknown_query

__all__ = ["router", "shown_schema"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}",
    tags=["schemas"],
    dependencies=[Depends(refuse_unknown_query)],
)
Namespace = Annotated[str, PathParam(description="Namespace (`_defaults`: tenant-wide).")]


class SchemaNotFound(NotFound):
    """The namespace has no schema of its own."""

    code = "schema_not_found"


async def _set_schema(
    request: Request, access: Access, namespace: str, schema: Schema | None
) -> int:
    """Replace (None: remove) the schema, audited and counted; the new revision."""
    try:
        revision = await access.store.set_schema(
            access.tenant, namespace, schema, actor=access.actor, reason=access.why()
        )
    finally:
        note_write(request, access.tenant, None)
    request.app.state.metrics.writes.labels("schema").inc()
    return revision


def shown_schema(
    access: Access, schema: Schema, schemas: dict[str, Schema], namespace: str
) -> dict[str, Any]:
    """A schema as JSON; sensitive keys' defaults masked without the secrets right."""
    if access.secrets_on(namespace):
        doc: dict[str, Any] = msgspec.to_builtins(schema)
        return doc
    return masked_schema(schema, schemas, namespace)


def _check_sensitive_unchanged(
    before: dict[str, Schema], namespace: str, schema: Schema | None
) -> None:
    """Without the secrets right, a sensitive key's spec may not change.

    Unmarking it would show its value; adding ``choices``, ``min``/``max`` or
    ``max_length`` would turn the schema check into an oracle of its value.
    """
    old = before.get(namespace)
    old_keys = old.keys if old is not None else {}
    new_keys = schema.keys if schema is not None else {}
    sensitive = {k for k, s in effective_specs(before, namespace).items() if s.sensitive}
    for key in sorted(sensitive):
        if old_keys.get(key) != new_keys.get(key):
            raise Forbidden(
                f"changing the schema of sensitive key {key!r} needs the secrets right",
                key=key,
            )


@router.get(
    "/schemas",
    summary="Every schema of the tenant by namespace",
    operation_id="listSchemas",
    responses=response_doc(Schemas),
)
async def all_schemas(access: ViewAccess) -> Response:
    """``_defaults`` holds the tenant-wide schema.

    A namespace-scoped token gets its namespaces' schemas and ``_defaults``'s
    (part of the effective values of every namespace).
    """
    found = await access.store.schemas(access.tenant)
    shown = {
        ns: shown_schema(access, s, found, ns)
        for ns, s in found.items()
        if ns == DEFAULTS_NAMESPACE or access.shows(ns)
    }
    return respond({"tenant": access.tenant, "schemas": shown})


@router.get(
    "/namespaces/{namespace}/schema",
    summary="A namespace's own schema",
    operation_id="getSchema",
    responses=response_doc(SchemaBody),
)
async def get_schema(namespace: Namespace, access: ReadAccess) -> Response:
    """404 when the namespace has no schema of its own."""
    found = await access.store.schemas(access.tenant)
    schema = found.get(validate_namespace(namespace))
    if schema is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    return respond(shown_schema(access, schema, found, namespace))


@router.put(
    "/namespaces/{namespace}/schema",
    summary="Replace a namespace's schema (refused if current values break it)",
    openapi_extra=body_doc(Schema),
    operation_id="putSchema",
    responses=response_doc((SchemaSet, SchemaPreview)),
)
async def put_schema(
    namespace: Namespace, request: Request, access: AdminAccess, dry_run: DryRun = False
) -> Response:
    """422 listing every problem when the document or current values break it."""
    schema = decode_schema_document(await request.body())
    try:
        before = await access.store.schemas(access.tenant)
    except TenantNotFound:  # a schema write creates the tenant
        before = {}
    if not access.secrets:
        _check_sensitive_unchanged(before, namespace, schema)
    if dry_run:
        await access.store.check_schema(access.tenant, namespace, schema)
        shown = shown_schema(access, schema, before, namespace)
        return respond({"dry_run": True, "would_commit": True, "schema": shown})
    revision = await _set_schema(request, access, namespace, schema)
    shown = shown_schema(access, schema, before, namespace)
    return respond({"revision": revision, "schema": shown})


@router.delete(
    "/namespaces/{namespace}/schema",
    summary="Remove a namespace's schema",
    operation_id="deleteSchema",
    responses=response_doc((Revision, SchemaPreview)),
)
async def delete_schema(
    namespace: Namespace, request: Request, access: AdminAccess, dry_run: DryRun = False
) -> Response:
    """Removing a schema that does not exist is a 404."""
    before = await access.store.schemas(access.tenant)
    if before.get(validate_namespace(namespace)) is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    if not access.secrets:
        _check_sensitive_unchanged(before, namespace, None)
    if dry_run:
        await access.store.check_schema(access.tenant, namespace, None)
        return respond({"dry_run": True, "would_commit": True})
    return respond({"revision": await _set_schema(request, access, namespace, None)})
