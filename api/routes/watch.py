"""Watching: the SSE change stream of a tenant, and the fleet of watchers."""

from __future__ import annotations

from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from sse_starlette import EventSourceResponse
from starlette.responses import Response

import kvconf
from kvconf.exceptions import InvalidInput

from ..deps import MetricsDep, ReadAccess, resolve_access
from ..models import Fleet, respond, response_doc
from ..query import refuse_unknown_query
from ..sse import change_stream

__all__ = ["HEARTBEAT_SECONDS", "RECHECK_SECONDS", "router"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}", tags=["watch"], dependencies=[Depends(refuse_unknown_query)]
)
#: Seconds between heartbeat comments on an idle stream.
HEARTBEAT_SECONDS = 5
#: Seconds between re-authentications of an open stream's caller.
RECHECK_SECONDS = 5.0


@router.get(
    "/watch",
    summary="Server-Sent Events of the tenant's changes (resumable)",
    response_class=EventSourceResponse,
    operation_id="watchTenant",
)
async def watch(
    request: Request,
    access: ReadAccess,
    metrics: MetricsDep,
    from_revision: Annotated[
        int | None, Query(ge=0, description="Replay events after this revision.")
    ] = None,
    max_events: Annotated[int | None, Query(ge=1, description="Close after this many.")] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this id.")] = None,
) -> EventSourceResponse:
    """Events ``change``, ``schema`` and ``reset`` (re-read the full state), id = revision."""
    start = from_revision
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id)
        except ValueError:
            raise InvalidInput("Last-Event-ID must be a revision", field="Last-Event-ID") from None
        if start < 0:
            raise InvalidInput("Last-Event-ID must be a revision", field="Last-Event-ID")
    if start is None:
        start = await access.store.revision(access.tenant)
    else:
        await access.store.info(access.tenant)
    tenant = access.tenant
    stream = change_stream(
        access, start, metrics, max_events=max_events,
        recheck=lambda: resolve_access(request, tenant, "read"), recheck_every=RECHECK_SECONDS,
    )  # fmt: skip
    return EventSourceResponse(stream, ping=HEARTBEAT_SECONDS)


@router.get(
    "/fleet",
    summary="Watchers of the tenant: alive, and at which revision",
    operation_id="getFleet",
    responses=response_doc(Fleet),
)
async def fleet(access: ReadAccess) -> Response:
    """Watcher instances that reported within the last seconds (see :func:`kvconf.fleet`)."""
    await access.store.info(access.tenant)
    found = await kvconf.fleet(access.store, access.tenant)
    return respond({"tenant": access.tenant, "watchers": msgspec.to_builtins(found)})
