"""Watching: the atomic state, the SSE change stream of a tenant, and the fleet of watchers.

An HTTP watcher lists ``GET .../state`` (every key at one revision, with the
schemas) and then follows ``GET .../watch`` from that revision.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

import kvconf
from kvconf._redis.names import DEFAULTS_NAMESPACE, validate_namespace
from kvconf.exceptions import InvalidInput
from kvconf.models import Entry
from kvconf.schema import effective_specs

from ..deps import Access, Masker, MetricsDep, ReadAccess, ViewAccess, resolve_access
from ..errors import NamespaceNotFound
from ..fanout import FanOut
from ..fleet import HEADER, StreamFleet, parse_identity, reporting
from ..metrics import StreamState
from ..models import Fleet, TenantStateDoc, respond, response_doc
from ..query import refuse_unknown_query
from ..sse import EventStream, Outlet, change_stream, reset_frame
from .schemas import shown_schema

__all__ = ["HEARTBEAT_SECONDS", "RECHECK_SECONDS", "router"]

router = APIRouter(
    prefix="/api/v1/tenants/{tenant}", tags=["watch"], dependencies=[Depends(refuse_unknown_query)]
)
#: Seconds between heartbeat comments on an idle stream.
HEARTBEAT_SECONDS = 5
#: Seconds between re-authentications of an open stream's caller.
RECHECK_SECONDS = 5.0

Namespaces = Annotated[
    str | None,
    Query(description="Comma-separated namespaces (default: every one the caller sees)."),
]


def _wanted(access: Access, namespaces: str | None) -> set[str] | None:
    """The namespaces asked for, each checked visible (a hidden one is a 404)."""
    if namespaces is None:
        return None
    names = {validate_namespace(n.strip()) for n in namespaces.split(",") if n.strip()}
    if not names:
        raise InvalidInput("namespaces must name at least one namespace", field="namespaces")
    for name in sorted(names):
        # _defaults comes along with any namespace (effective values need it),
        # also for a namespace-scoped token: naming it hides nothing.
        if name != DEFAULTS_NAMESPACE and not access.shows(name):
            raise NamespaceNotFound(access.tenant, name)
    return names


def _entry(mask: Masker, key: str, entry: Entry) -> dict[str, Any]:
    return {
        "value": mask(key, entry.value),
        "version": entry.version,
        "revision": entry.revision,
        "updated_at": entry.updated_at,
        "updated_by": entry.updated_by,
    }


@router.get(
    "/state",
    summary="Every key and schema of the tenant at one revision (what a watcher lists)",
    operation_id="getState",
    responses=response_doc(TenantStateDoc),
)
async def state(access: ViewAccess, namespaces: Namespaces = None) -> Response:
    """Read atomically at one revision; follow ``/watch?from_revision=<revision>`` after it.

    Values are masked without the ``secrets`` right. ``_defaults`` comes along
    with any namespace (effective values need it), also for a
    namespace-scoped token; other namespaces it does not see are left out.
    """
    wanted = _wanted(access, namespaces)
    store, tenant = access.store, access.tenant
    read = None if wanted is None else sorted(wanted | {DEFAULTS_NAMESPACE})
    found = await store.read_state(tenant, read)
    schemas = await store.schemas(tenant)

    def shown(ns: str) -> bool:
        return ns == DEFAULTS_NAMESPACE or (access.shows(ns) and (wanted is None or ns in wanted))

    spaces: dict[str, dict[str, Any]] = {}
    for ns, entries in found.namespaces.items():
        if not shown(ns) or not entries:
            continue
        mask = Masker(None if access.secrets_on(ns) else effective_specs(schemas, ns))
        spaces[ns] = {key: _entry(mask, key, e) for key, e in sorted(entries.items())}
    docs = {ns: shown_schema(access, s, schemas, ns) for ns, s in schemas.items() if shown(ns)}
    return respond({
        "tenant": tenant, "epoch": found.epoch, "revision": found.revision,
        "namespaces": spaces, "schemas": docs,
    })  # fmt: skip


@router.get(
    "/watch",
    summary="Server-Sent Events of the tenant's changes (resumable)",
    response_class=EventStream,
    operation_id="watchTenant",
    responses={503: {"description": "This worker serves its maximum of streams (Retry-After)."}},
)
async def watch(
    request: Request,
    access: ViewAccess,
    metrics: MetricsDep,
    from_revision: Annotated[
        int | None, Query(ge=0, description="Replay events after this revision.")
    ] = None,
    max_events: Annotated[int | None, Query(ge=1, description="Close after this many.")] = None,
    namespaces: Namespaces = None,
    heartbeat: Annotated[
        float | None,
        Query(ge=0.5, le=60, description="Seconds between heartbeats of an idle stream."),
    ] = None,
    epoch: Annotated[
        str | None,
        Query(max_length=64, description="The epoch the client's cache belongs to."),
    ] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this id.")] = None,
    watcher: Annotated[
        str | None,
        Header(alias=HEADER, description="An HTTP watcher's identity (JSON), for the fleet."),
    ] = None,
) -> EventStream:
    """Events ``change``, ``schema``, ``reset`` (re-read the full state) and ``progress``.

    ``id`` is the revision. With ``namespaces=`` or a namespace-scoped
    token, other namespaces' revisions come as ``progress`` events
    (``{"revision": n}``). An idle stream sends a comment (``: ping``) every
    ``heartbeat`` seconds (default 5): a client that hears nothing for two of
    them knows the stream is dead. A client resuming with ``Last-Event-ID``
    may give the ``epoch`` of its cache: when the tenant's history was
    replaced since (another epoch), the stream starts with a ``reset`` at
    the current revision. Past the worker's ``max_streams`` the stream is
    refused with 503 and ``Retry-After``.
    """
    wanted = _wanted(access, namespaces)
    identity = None if watcher is None else parse_identity(watcher)
    start = from_revision
    if last_event_id is not None and last_event_id.strip():
        try:
            start = int(last_event_id)
        except ValueError:
            raise InvalidInput("Last-Event-ID must be a revision", field="Last-Event-ID") from None
        if start < 0:
            raise InvalidInput("Last-Event-ID must be a revision", field="Last-Event-ID")
    fanout: FanOut = request.app.state.fanout
    slot = fanout.reserve()
    tenant = access.tenant
    try:
        start, reset = await _where_to_start(access, fanout, start, epoch)
    except BaseException:
        slot.release()
        raise
    auth = request.app.state.auth
    outlet, position = Outlet(), StreamState(tenant)
    position.update(start, start)
    stream = change_stream(
        access, start, metrics, fanout, slot, namespaces=wanted, max_events=max_events,
        recheck=lambda: resolve_access(request, tenant, "read", filtered=True),
        recheck_every=RECHECK_SECONDS,
        heartbeat=HEARTBEAT_SECONDS if heartbeat is None else heartbeat,
        generation=lambda: auth.generation, outlet=outlet, state=position,
    )  # fmt: skip
    fanout.guard(stream, slot)
    if reset is not None:
        stream = _after(reset, stream)
    if identity is not None:
        fleet: StreamFleet = request.app.state.stream_fleet
        member = fleet.join(tenant, identity, epoch or "", position)
        stream = reporting(stream, fleet, member)
    return EventStream(stream, outlet=outlet)


async def _where_to_start(
    access: Access, fanout: FanOut, start: int | None, epoch: str | None
) -> tuple[int, bytes | None]:
    """The revision the stream starts after, and the ``reset`` it must begin with (if any).

    A tenant followed by a live feed exists and is at the feed's revision and
    epoch: a fleet (re)connecting costs Redis nothing per stream. Otherwise one
    read checks that the tenant exists and where it is. A resume in another
    epoch, or from beyond the tenant's revision (history lost, e.g. by a
    failover that dropped the last writes), starts with a ``reset`` at the
    current revision: replaying the log after ``start`` would skip the
    revisions written again since.
    """
    known = fanout.position(access.tenant)
    if known is None or (start is not None and start > known[0]):
        async with fanout.starting:
            info = await access.store.info(access.tenant)
        known = info.revision, info.epoch
    current, current_epoch = known
    if epoch and epoch != current_epoch:
        return current, reset_frame(access.tenant, current, "epoch changed")
    if start is not None and start > current:
        return current, reset_frame(access.tenant, current, "revision went backwards")
    return (current if start is None else start), None


async def _after(first: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then the stream's frames (closing the stream when done)."""
    try:
        yield first
        async for sse in stream:
            yield sse
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


@router.get(
    "/fleet",
    summary="Watchers of the tenant: alive, and at which revision",
    operation_id="getFleet",
    responses=response_doc(Fleet),
)
async def fleet(access: ReadAccess) -> Response:
    """Watcher instances that reported within the last seconds (see :func:`kvconf.fleet`):
    direct-Redis watchers report themselves, HTTP watchers are reported by the
    worker they stream from (with the revision their stream delivered).

    A tenant-level resource: a namespace-scoped token gets a 404.
    """
    await access.store.info(access.tenant)
    found = await kvconf.fleet(access.store, access.tenant)
    return respond({"tenant": access.tenant, "watchers": msgspec.to_builtins(found)})
