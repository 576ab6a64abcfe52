"""Shared dependencies: the store, the caller, tenant access, masking, audit.

``StoreDep`` is the one store created in the app's lifespan. ``ReadAccess``,
``WriteAccess`` and ``AdminAccess`` check the caller's right on the path's
tenant, or on the path's namespace when the route has one: a tenant or
namespace the caller has no right on is a 404 (its existence is not
revealed), a missing right on a visible one a 403. On a route of the whole
tenant (no namespace in the path), a namespace-scoped token is a 404: it
sees no tenant-level resource. ``ViewAccess`` (and ``access_to(...,
filtered=True)``) instead admits a namespace-scoped token and hands the
route a namespace filter (:meth:`Access.shows`) for listings, logs, diffs and
streams.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from fastapi import Path as PathParam

from kvconf.exceptions import InvalidInput, TenantNotFound
from kvconf.models import KeySpec, WriteResult
from kvconf.schema import MASK
from kvconf.store import Store
from kvconf.watcher import Watcher

from .auth import Authenticator, Principal
from .cache import ReadCache, wants_consistent
from .errors import Forbidden, NamespaceNotFound
from .metrics import Metrics

__all__ = [
    "Access",
    "AdminAccess",
    "MetricsDep",
    "PrincipalDep",
    "ReadAccess",
    "StoreDep",
    "ViewAccess",
    "WriteAccess",
    "access_to",
    "cached_reader",
    "expected_version",
    "get_principal",
    "get_store",
    "if_match",
    "masker",
    "note_write",
    "read_cache",
    "resolve_access",
]

_SCHEMA_REFRESH = 1.0


async def get_store(request: Request) -> Store:
    """The store opened by the app's lifespan (async: no threadpool hop)."""
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


async def get_metrics(request: Request) -> Metrics:
    """The app's metrics."""
    metrics: Metrics = request.app.state.metrics
    return metrics


MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def get_principal(request: Request) -> Principal:
    """The caller, from the ``Authorization`` header."""
    auth: Authenticator = request.app.state.auth
    return await auth.authenticate(request.headers.get("authorization"))


PrincipalDep = Annotated[Principal, Depends(get_principal)]


class Access:
    """A caller's checked access to one tenant (or one namespace), with its audit identity.

    ``namespace`` is the namespace the access was checked on (None: the
    tenant); ``visible`` filters namespaces for a namespace-scoped token on a
    tenant-level route (None: every namespace is visible).
    """

    __slots__ = (
        "actor", "namespace", "principal", "reason", "secrets", "store", "tenant", "visible",
    )  # fmt: skip

    def __init__(
        self,
        tenant: str,
        principal: Principal,
        actor: str,
        reason: str,
        store: Store,
        namespace: str | None = None,
    ) -> None:
        self.tenant = tenant
        self.principal = principal
        self.actor = actor
        self.reason = reason
        self.namespace = namespace
        self.secrets = (
            principal.can(tenant, "secrets")
            if namespace is None
            else principal.can_ns(tenant, namespace, "secrets")
        )
        self.store = store
        self.visible = principal.namespace_filter(tenant)

    def why(self, body_reason: str = "") -> str:
        """The audit reason: the body's field, else the ``X-Change-Reason`` header."""
        return body_reason or self.reason

    def shows(self, namespace: str) -> bool:
        """True if the caller sees ``namespace`` of this tenant."""
        return self.visible is None or self.visible(namespace)

    def secrets_on(self, namespace: str) -> bool:
        """True if the caller reads ``namespace``'s sensitive values unmasked."""
        return self.secrets or self.principal.can_ns(self.tenant, namespace, "secrets")

    def require(self, namespace: str, right: str) -> None:
        """Check ``right`` on one namespace of this tenant (404 if hidden, 403 if short)."""
        check_access(self.principal, self.tenant, right, namespace)


def _actor(request: Request, principal: Principal) -> str:
    client = request.client.host if request.client is not None else "unknown"
    return f"{principal.name}@{client}"[:256]


def check_access(
    principal: Principal,
    tenant: str,
    right: str,
    namespace: str | None = None,
    *,
    filtered: bool = False,
) -> None:
    """404 for an invisible tenant or namespace, 403 for a missing right.

    With ``namespace`` the right is checked on it. Without, the right is on
    the whole tenant: a namespace-scoped token gets a 404 (tenant-level
    resources do not exist for it), unless ``filtered`` admits it so the
    route shows only its namespaces.
    """
    if not principal.sees(tenant):
        raise TenantNotFound(tenant)
    if namespace is not None:
        if not principal.sees_ns(tenant, namespace):
            raise NamespaceNotFound(tenant, namespace)
        if not principal.can_ns(tenant, namespace, right):
            raise Forbidden(
                f"this token lacks the {right!r} right on {tenant}/{namespace}", tenant=tenant
            )
        return
    if principal.scoped(tenant):
        if not filtered:
            raise TenantNotFound(tenant)
        return
    if not principal.can(tenant, right):
        raise Forbidden(f"this token lacks the {right!r} right on {tenant!r}", tenant=tenant)


def access_to(
    right: str,
    tenant: str | None = None,
    *,
    filtered: bool = False,
    namespace: Callable[[Request], str | None] | None = None,
) -> Callable[..., Awaitable[Access]]:
    """A dependency checking ``right`` on the path's tenant (or a fixed one).

    The right is checked on the path's ``{namespace}`` when there is one (or
    on ``namespace(request)``), else on the tenant (``filtered``: see
    :func:`check_access`). It reads the store and the caller straight from
    the request rather than through sub-dependencies: this runs on every
    request and FastAPI's dependency solving is a visible share of a key
    read's cost.
    """

    def _namespace(request: Request) -> str | None:
        if namespace is not None:
            return namespace(request)
        found: str | None = request.path_params.get("namespace")
        return found

    async def fixed(request: Request) -> Access:
        assert tenant is not None
        return await resolve_access(request, tenant, right, _namespace(request), filtered=filtered)

    async def from_path(
        request: Request, tenant: Annotated[str, PathParam(description="Tenant name.")]
    ) -> Access:
        return await resolve_access(request, tenant, right, _namespace(request), filtered=filtered)

    return fixed if tenant is not None else from_path


async def resolve_access(
    request: Request,
    tenant: str,
    right: str,
    namespace: str | None = None,
    *,
    filtered: bool = False,
) -> Access:
    """The caller's checked ``right`` on ``tenant`` or its ``namespace`` (see ``access_to``).

    Hot routes call it directly instead of going through FastAPI's dependency
    solving.
    """
    state = request.app.state
    principal = await state.auth.authenticate(request.headers.get("authorization"))
    check_access(principal, tenant, right, namespace, filtered=filtered)
    reason = change_reason(request.headers.get("x-change-reason", ""))
    return Access(tenant, principal, _actor(request, principal), reason, state.store, namespace)


ReadAccess = Annotated[Access, Depends(access_to("read"))]
WriteAccess = Annotated[Access, Depends(access_to("write"))]
AdminAccess = Annotated[Access, Depends(access_to("admin"))]
#: Read access to a tenant-level route that filters what it shows by namespace.
ViewAccess = Annotated[Access, Depends(access_to("read", filtered=True))]


class Masker:
    """Masks sensitive values for callers without the secrets right."""

    __slots__ = ("specs",)

    def __init__(self, specs: dict[str, KeySpec] | None) -> None:
        self.specs = specs

    def __call__(self, key: str, value: Any) -> Any:
        return MASK if self.hides(key) else value

    def hides(self, key: str) -> bool:
        """True when this caller must not learn anything about ``key``'s value."""
        if self.specs is None:
            return False
        spec = self.specs.get(key)
        return spec is not None and spec.sensitive


_seen: weakref.WeakKeyDictionary[Store, dict[str, float]] = weakref.WeakKeyDictionary()


async def masker(access: Access, namespace: str) -> Masker:
    """The masker of ``namespace`` for this caller (no-op with the secrets right).

    The store caches schemas per process; they are reloaded at least every
    second so a key marked sensitive elsewhere is masked here soon after.
    """
    if access.secrets_on(namespace):
        return Masker(None)
    store = access.store
    seen = _seen.setdefault(store, {})
    now = time.monotonic()
    if now - seen.get(access.tenant, 0.0) > _SCHEMA_REFRESH:
        if len(seen) > 10_000:
            seen.clear()
        # Marked before the read: the streams of a tenant masking one event
        # together make one schema read between them, not one each.
        seen[access.tenant] = now
        await store.schemas(access.tenant)
    return Masker(await store.specs(access.tenant, namespace))


def read_cache(request: Request) -> ReadCache | None:
    """The app's read cache (None when it is off)."""
    cache: ReadCache | None = request.app.state.cache
    return cache


def cached_reader(request: Request, tenant: str) -> tuple[ReadCache | None, Watcher | None]:
    """The read cache and the tenant's watcher when this read may be served from it.

    ``?consistent=true`` or ``Cache-Control: no-cache`` asks for a Redis read.
    """
    cache: ReadCache | None = request.app.state.cache
    if cache is None:
        return None, None
    scope = request.scope
    query = scope["query_string"]
    if (query or any(name == b"cache-control" for name, _ in scope["headers"])) and (
        wants_consistent(query.decode("latin-1"), request.headers.get("cache-control"))
    ):
        return cache, None
    return cache, cache.reader(tenant)


def change_reason(header: str) -> str:
    """The ``X-Change-Reason`` header's text: UTF-8 bytes (as kvconf's clients send a
    reason in any language) arrive decoded as Latin-1 and are read back as UTF-8."""
    try:
        return header.encode("latin-1").decode()
    except (UnicodeEncodeError, UnicodeDecodeError):
        return header


def note_write(request: Request, tenant: str, result: WriteResult | None) -> None:
    """Tell the read cache what this process wrote (None: drop the tenant's watcher)."""
    cache: ReadCache | None = request.app.state.cache
    if cache is None:
        return
    if result is None:
        cache.forget(tenant)
    else:
        cache.wrote(tenant, result.epoch, result.revision)


def parse_etag(text: str) -> int:
    """The version in an ETag (``"3"``, ``W/"3"`` or ``3``)."""
    raw = text.strip().removeprefix("W/").strip('"')
    try:
        version = int(raw)
    except ValueError:
        raise InvalidInput(f"not an ETag of this API: {text!r}", field="If-Match") from None
    if version < 0:
        raise InvalidInput(f"not an ETag of this API: {text!r}", field="If-Match")
    return version


async def if_match(
    request: Request,
    if_match: Annotated[
        str | None, Header(description="Write only if the version matches.")
    ] = None,
    if_none_match: Annotated[str | None, Header(description="`*`: create only.")] = None,
) -> int | None:
    """The expected version from ``If-Match`` / ``If-None-Match: *`` (None: no CAS).

    A mismatch of a header precondition is a 412 (the error handler reads
    ``request.state.cas_from_header``), not the 409 of a body expectation.
    """
    return expected_version(request, if_match, if_none_match)


def expected_version(
    request: Request, if_match: str | None, if_none_match: str | None
) -> int | None:
    """See :func:`if_match` (plain function for the hot routes)."""
    if if_none_match is not None:
        if if_none_match.strip() != "*":
            raise InvalidInput("only 'If-None-Match: *' is supported", field="If-None-Match")
        request.state.cas_from_header = True
        return 0
    if if_match is None:
        return None
    request.state.cas_from_header = True
    if if_match.strip() == "*":
        return -1
    return parse_etag(if_match)


IfMatch = Annotated[int | None, Depends(if_match)]
#: ``?dry_run=true`` on a route that changes data: the same checks, nothing written.
DryRun = Annotated[bool, Query(description="Validate and return the diff without committing.")]
