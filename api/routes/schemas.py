"""Schemas: read and replace a tenant's (``_defaults``) or a namespace's schema."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from kvconf.exceptions import NotFound
from kvconf.models import Schema
from kvconf.schema import MASK, decode_schema_document

from ..deps import Access, AdminAccess, ReadAccess, note_write
from ..models import Revision, SchemaBody, Schemas, SchemaSet, body_doc, respond, response_doc

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


def _shown(access: Access, schema: Schema) -> dict[str, Any]:
    """A schema as JSON; defaults of sensitive keys masked without the secrets right."""
    doc: dict[str, Any] = msgspec.to_builtins(schema)
    if not access.secrets:
        for key, spec in schema.keys.items():
            if spec.sensitive and "default" in doc.get("keys", {}).get(key, {}):
                doc["keys"][key]["default"] = MASK
    return doc


@router.get(
    "/schemas",
    summary="Every schema of the tenant by namespace",
    operation_id="listSchemas",
    responses=response_doc(Schemas),
)
async def all_schemas(access: ReadAccess) -> Response:
    """``_defaults`` holds the tenant-wide schema."""
    found = await access.store.schemas(access.tenant)
    shown = {ns: _shown(access, s) for ns, s in found.items()}
    return respond({"tenant": access.tenant, "schemas": shown})


@router.get(
    "/namespaces/{namespace}/schema",
    summary="A namespace's own schema",
    operation_id="getSchema",
    responses=response_doc(SchemaBody),
)
async def get_schema(namespace: Namespace, access: ReadAccess) -> Response:
    """404 when the namespace has no schema of its own."""
    schema = await access.store.get_schema(access.tenant, namespace)
    if schema is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    return respond(_shown(access, schema))


@router.put(
    "/namespaces/{namespace}/schema",
    summary="Replace a namespace's schema (refused if current values break it)",
    openapi_extra=body_doc(Schema),
    operation_id="putSchema",
    responses=response_doc(SchemaSet),
)
async def put_schema(namespace: Namespace, request: Request, access: AdminAccess) -> Response:
    """422 listing every problem when the document or current values break it."""
    schema = decode_schema_document(await request.body())
    revision = await _set_schema(request, access, namespace, schema)
    return respond({"revision": revision, "schema": _shown(access, schema)})


@router.delete(
    "/namespaces/{namespace}/schema",
    summary="Remove a namespace's schema",
    operation_id="deleteSchema",
    responses=response_doc(Revision),
)
async def delete_schema(namespace: Namespace, request: Request, access: AdminAccess) -> Response:
    """Removing a schema that does not exist is a 404."""
    if await access.store.get_schema(access.tenant, namespace) is None:
        raise SchemaNotFound(f"{access.tenant}/{namespace} has no schema", namespace=namespace)
    return respond({"revision": await _set_schema(request, access, namespace, None)})
