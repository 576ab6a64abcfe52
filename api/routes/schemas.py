"""Schemas: read and replace a tenant's (``_defaults``) or a namespace's schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf._redis.names import validate_namespace
from kvconf.exceptions import NotFound, TenantNotFound
from kvconf.models import Schema
from kvconf.schema import decode_schema_document, effective_specs, masked_schema

from ..deps import Access, AdminAccess, ReadAccess, note_write
from ..errors import Forbidden
from ..models import body_doc, respond

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/tenants/{tenant}", tags=["schemas"])
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


def _shown(
    access: Access, schema: Schema, schemas: dict[str, Schema], namespace: str
) -> dict[str, Any]:
    """A schema as JSON; sensitive keys' defaults masked without the secrets right."""
    if access.secrets:
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


@router.get("/schemas", summary="Every schema of the tenant by namespace")
async def all_schemas(access: ReadAccess) -> Response:
    """``_defaults`` holds the tenant-wide schema."""
    found = await access.store.schemas(access.tenant)
    shown = {ns: _shown(access, s, found, ns) for ns, s in found.items()}
    return respond({"tenant": access.tenant, "schemas": shown})


@router.get("/namespaces/{namespace}/schema", summary="A namespace's own schema")
async def get_schema(namespace: Namespace, access: ReadAccess) -> Response:
    """404 when the namespace has no schema of its own."""
    found = await access.store.schemas(access.tenant)
    schema = found.get(validate_namespace(namespace))
    if schema is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    return respond(_shown(access, schema, found, namespace))


@router.put(
    "/namespaces/{namespace}/schema",
    summary="Replace a namespace's schema (refused if current values break it)",
    openapi_extra=body_doc(Schema),
)
async def put_schema(namespace: Namespace, request: Request, access: AdminAccess) -> Response:
    """422 listing every problem when the document or current values break it."""
    schema = decode_schema_document(await request.body())
    try:
        before = await access.store.schemas(access.tenant)
    except TenantNotFound:  # setting a schema creates the tenant
        before = {}
    if not access.secrets:
        _check_sensitive_unchanged(before, namespace, schema)
    revision = await _set_schema(request, access, namespace, schema)
    return respond({"revision": revision, "schema": _shown(access, schema, before, namespace)})


@router.delete("/namespaces/{namespace}/schema", summary="Remove a namespace's schema")
async def delete_schema(namespace: Namespace, request: Request, access: AdminAccess) -> Response:
    """Removing a schema that does not exist is a 404."""
    before = await access.store.schemas(access.tenant)
    if before.get(validate_namespace(namespace)) is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    if not access.secrets:
        _check_sensitive_unchanged(before, namespace, None)
    return respond({"revision": await _set_schema(request, access, namespace, None)})
