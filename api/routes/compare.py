"""Comparing two namespaces, possibly of different tenants (``GET /api/v1/compare``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from kvconf.compare import Comparison, compare, parse_side

from ..deps import masker, resolve_access
from ..models import respond, response_doc
from ..query import refuse_unknown_query

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/compare", tags=["history"], dependencies=[Depends(refuse_unknown_query)]
)
Side = Annotated[str, Query(description="tenant/namespace, e.g. acme/ai-12.")]


@router.get(
    "",
    summary="Keys that differ between two namespaces (across tenants)",
    operation_id="compareNamespaces",
    responses=response_doc(Comparison),
)
async def compare_namespaces(request: Request, left: Side, right: Side) -> Response:
    """Needs read on both tenants (a side the caller cannot see is a 404).

    Sensitive values are masked on each side the caller lacks ``secrets`` on.
    """
    left_tenant, left_ns = parse_side(left)
    right_tenant, right_ns = parse_side(right)
    left_access = await resolve_access(request, left_tenant, "read")
    right_access = await resolve_access(request, right_tenant, "read")
    left_mask = await masker(left_access, left_ns)
    right_mask = await masker(right_access, right_ns)
    result = await compare(
        left_access.store, left_tenant, left_ns, right_tenant, right_ns,
        hidden=lambda key: left_mask.hides(key) or right_mask.hides(key),
    )  # fmt: skip
    differences = []
    for d in result.differences:
        doc = msgspec.to_builtins(d)
        doc["left"] = left_mask(d.key, d.left) if d.left_version else None
        doc["right"] = right_mask(d.key, d.right) if d.right_version else None
        differences.append(doc)
    return respond(
        {"left": result.left, "right": result.right, "same": result.same,
         "differences": differences}
    )  # fmt: skip
