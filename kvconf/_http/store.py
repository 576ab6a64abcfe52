"""HttpStore: :class:`kvconf.Store`'s methods over a ``kvconf serve`` REST API.

``Store("https://kvconf.example", token=...)`` returns one (see
:mod:`kvconf._backends`). It subclasses Store so ``isinstance(s, Store)`` and
every annotation taking a Store hold, and it overrides every public method:
none of Store's Redis code runs here (a guard test checks the overrides).

Differences a caller can see, all from the server's side of the wire:

* the audit ``actor`` is the server's (the token's name and the client's
  address); an ``actor=`` argument is ignored;
* values of sensitive keys come masked unless the token has ``secrets``;
* ``explain``/``effective`` use the server's environment layer;
* ``commit(create=False)`` checks the tenant first (not atomic with the write;
  ``commit_across`` is);
* ``changes_since`` with a namespace-scoped token holds only its namespaces' events;
* :data:`NOT_AVAILABLE` methods raise :class:`InvalidInput`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NoReturn
from urllib.parse import quote

import msgspec

from .. import _backends
from .._redis.names import validate_key, validate_namespace, validate_tenant
from .._store.plan import ChangePlan, plan_across
from ..config import Settings
from ..exceptions import (
    InvalidInput,
    KeyNotFound,
    NotFound,
    TenantNotFound,
    VersionNotFound,
)
from ..models import (
    ChangeEvent,
    Entry,
    Explanation,
    KeySpec,
    LayerValue,
    Schema,
    TenantInfo,
    TenantState,
    Version,
    WriteResult,
)
from ..schema import effective_specs
from ..store import Store, tenant_keys
from .client import HttpClient, reason_header

__all__ = ["NOT_AVAILABLE", "HttpStore"]

#: Store methods that need Redis itself; through a server they raise InvalidInput.
NOT_AVAILABLE = ("redis", "repair_tenants")
#: The largest page of ``GET .../log`` (the route's cap).
LOG_PAGE = 1000

_API = "/api/v1/tenants"


def _seg(name: str) -> str:
    return quote(name, safe="")


def _unavailable(what: str) -> NoReturn:
    raise InvalidInput(f"{what} is not available through a kvconf server", field=what)


def _expect_headers(expect: int | None) -> dict[str, str]:
    """Store's expect_version as HTTP preconditions (0: absent, -1: any version)."""
    if expect is None:
        return {}
    if expect == 0:
        return {"If-None-Match": "*"}
    if expect == -1:
        return {"If-Match": "*"}
    return {"If-Match": f'"{expect}"'}


class HttpStore(Store):
    """A :class:`~kvconf.Store` whose every call is a request to a ``kvconf serve``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        if url is None:  # Store() with KVCONF_SERVER set
            url, found = _backends.default_url(os.environ)
            token = token if token is not None else found
        if url is None or _backends.implementation(url) is not HttpStore:
            raise InvalidInput("a kvconf server URL (http:// or https://) is required", field="url")
        if client is not None or environ is not None:
            raise InvalidInput("client and environ are for Redis URLs", field="client")
        self.settings = settings if settings is not None else Settings()
        self.url = url
        self._http = HttpClient(url, token)

    @property
    def redis(self) -> Any:
        """Not available: the server holds the Redis connection."""
        _unavailable("redis")

    @redis.setter
    def redis(self, value: Any) -> None:
        _unavailable("redis")

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return await self._http.request("GET", path, params=params)

    # -- reads -----------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the server is ready (its Redis answers); :class:`Unavailable` otherwise."""
        await self._get("/readyz")
        return True

    async def tenants(self) -> list[str]:
        """Names of every live tenant the token sees, sorted."""
        return sorted((await self._get(_API))["tenants"])

    async def info(self, tenant: str) -> TenantInfo:
        """A tenant's revision, epoch, namespaces (those the token sees) and creation time."""
        doc = await self._get(f"{_API}/{_seg(validate_tenant(tenant))}")
        return msgspec.convert(doc, TenantInfo)

    async def exists(self, tenant: str) -> bool:
        """True if the tenant exists, is not deleted, and the token sees it."""
        try:
            await self.info(tenant)
        except TenantNotFound:
            return False
        return True

    async def is_deleted(self, tenant: str) -> bool:
        """True if the tenant is soft-deleted; :class:`TenantNotFound` if there is none."""
        doc = await self._get(_API, {"include_deleted": "true"})
        if tenant in doc.get("deleted", []):
            return True
        if tenant in doc["tenants"]:
            return False
        raise TenantNotFound(tenant)

    async def revision(self, tenant: str) -> int:
        """The tenant's current revision (0 before its first write)."""
        return (await self.info(tenant)).revision

    async def namespaces(self, tenant: str) -> list[str]:
        """Names of the tenant's namespaces (that the token sees), sorted."""
        doc = await self._get(f"{_API}/{_seg(validate_tenant(tenant))}/namespaces")
        return sorted(doc["namespaces"])

    def _ns_path(self, tenant: str, namespace: str) -> str:
        validate_tenant(tenant)
        validate_namespace(namespace)
        return f"{_API}/{_seg(tenant)}/namespaces/{_seg(namespace)}"

    def _key_path(self, tenant: str, namespace: str, key: str) -> str:
        return f"{self._ns_path(tenant, namespace)}/keys/{_seg(validate_key(key))}"

    async def get(self, tenant: str, namespace: str, key: str) -> Entry:
        """The current entry of one key; :class:`KeyNotFound` if it has none."""
        return msgspec.convert(await self._get(self._key_path(tenant, namespace, key)), Entry)

    async def get_namespace(self, tenant: str, namespace: str) -> dict[str, Entry]:
        """Every current entry of a namespace (empty if it has none)."""
        doc = await self._get(self._ns_path(tenant, namespace))
        return {k: msgspec.convert(e, Entry) for k, e in doc["keys"].items()}

    async def read_state(self, tenant: str, namespaces: Iterable[str] | None = None) -> TenantState:
        """A tenant's state read atomically at one revision (``GET .../state``)."""
        names = None if namespaces is None else [validate_namespace(n) for n in namespaces]
        params = None if names is None else {"namespaces": ",".join(names)}
        doc = await self._get(f"{_API}/{_seg(validate_tenant(tenant))}/state", params)
        spaces = {
            ns: {k: msgspec.convert(e, Entry) for k, e in entries.items()}
            for ns, entries in doc["namespaces"].items()
            if names is None or ns in names
        }
        return TenantState(
            tenant=tenant, epoch=doc["epoch"], revision=doc["revision"], namespaces=spaces
        )

    async def history(
        self,
        tenant: str,
        namespace: str,
        key: str,
        *,
        limit: int = 20,
        before: int | None = None,
    ) -> list[Version]:
        """Versions of a key, newest first; page with ``before=<oldest seen>``."""
        if limit < 1 or (before is not None and before < 1):
            raise InvalidInput("limit must be >= 1 and before >= 1")
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        doc = await self._get(f"{self._key_path(tenant, namespace, key)}/history", params)
        return [msgspec.convert(v, Version) for v in doc["versions"]]

    async def version(self, tenant: str, namespace: str, key: str, version: int) -> Version:
        """One version of a key from its history."""
        try:
            found = await self.history(tenant, namespace, key, limit=1, before=version + 1)
        except KeyNotFound:
            found = []
        if not found or found[0].version != version:
            raise VersionNotFound(tenant, namespace, key, version)
        return found[0]

    async def explain(self, tenant: str, namespace: str) -> dict[str, Explanation]:
        """Every effective key with its winning layer and shadows (the server's environment)."""
        doc = await self._get(f"{self._ns_path(tenant, namespace)}/effective", {"explain": "true"})
        return {
            key: Explanation(
                key=key,
                value=e["value"],
                layer=e["layer"],
                shadowed=[msgspec.convert(s, LayerValue) for s in e["shadowed"]],
            )
            for key, e in doc["keys"].items()
        }

    async def explain_key(self, tenant: str, namespace: str, key: str) -> Explanation:
        """The effective value of one key, with its winning layer and shadows."""
        validate_key(key)
        found = (await self.explain(tenant, namespace)).get(key)
        return found if found is not None else Explanation(key=key, value=None, layer=None)

    async def effective(self, tenant: str, namespace: str) -> dict[str, Any]:
        """The effective value of every key of a namespace."""
        doc = await self._get(f"{self._ns_path(tenant, namespace)}/effective")
        values: dict[str, Any] = doc["values"]
        return values

    # -- schemas ---------------------------------------------------------------

    async def schemas(self, tenant: str) -> dict[str, Schema]:
        """Every schema of a tenant (that the token sees) by namespace."""
        doc = await self._get(f"{_API}/{_seg(validate_tenant(tenant))}/schemas")
        return {ns: msgspec.convert(s, Schema) for ns, s in doc["schemas"].items()}

    async def get_schema(self, tenant: str, namespace: str) -> Schema | None:
        """The schema set on ``namespace`` itself, or None."""
        try:
            doc = await self._get(f"{self._ns_path(tenant, namespace)}/schema")
        except NotFound as exc:
            if exc.code != "schema_not_found":
                raise
            return None
        return msgspec.convert(doc, Schema)

    async def specs(self, tenant: str, namespace: str) -> dict[str, KeySpec]:
        """The merged key specs that apply to ``namespace`` (own over ``_defaults``)."""
        validate_namespace(namespace)
        return effective_specs(await self.schemas(tenant), namespace)

    async def _schema_call(
        self, tenant: str, namespace: str, schema: Schema | None, reason: str, dry_run: bool
    ) -> Any:
        path = f"{self._ns_path(tenant, namespace)}/schema"
        params = {"dry_run": "true"} if dry_run else None
        if schema is None:
            return await self._http.request(
                "DELETE", path, params=params, headers=reason_header(reason)
            )
        return await self._http.request(
            "PUT", path, params=params, body=schema, headers=reason_header(reason)
        )

    async def set_schema(
        self,
        tenant: str,
        namespace: str,
        schema: Schema | None,
        *,
        actor: str | None = None,
        reason: str = "",
    ) -> int:
        """Replace (or with None remove) a namespace's schema; returns the revision."""
        doc = await self._schema_call(tenant, namespace, schema, reason, dry_run=False)
        revision: int = doc["revision"]
        return revision

    async def check_schema(self, tenant: str, namespace: str, schema: Schema | None) -> None:
        """Every check :meth:`set_schema` makes, without writing (the server's dry run)."""
        await self._schema_call(tenant, namespace, schema, "", dry_run=True)

    # -- tenants ---------------------------------------------------------------

    async def create_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = "", op: str = "create"
    ) -> None:
        """Create an empty tenant; :class:`TenantExists` if it exists."""
        if op != "create":
            raise InvalidInput("through a kvconf server, op must be 'create'", field="op")
        body = {"name": validate_tenant(tenant), "reason": reason}
        await self._http.request("POST", _API, body=body)

    async def delete_tenant(
        self, tenant: str, *, hard: bool = False, actor: str | None = None, reason: str = ""
    ) -> None:
        """Delete a tenant: soft (restorable) or hard (the server saves a snapshot first)."""
        await self._http.request(
            "DELETE",
            f"{_API}/{_seg(validate_tenant(tenant))}",
            params={"hard": "true"} if hard else None,
            headers=reason_header(reason),
        )

    async def undelete_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = ""
    ) -> None:
        """Bring back a soft-deleted tenant with all its values."""
        path = f"{_API}/{_seg(validate_tenant(tenant))}/undelete"
        await self._http.request("POST", path, headers=reason_header(reason))

    async def repair_tenants(self) -> list[str]:
        """Not available through a server (``kvconf serve`` repairs at start)."""
        _unavailable("repair_tenants")

    # -- writes ----------------------------------------------------------------

    @staticmethod
    def _result(tenant: str, namespace: str, doc: Any) -> WriteResult:
        return WriteResult(
            tenant=tenant,
            namespace=namespace,
            revision=doc["revision"],
            epoch=doc["epoch"],
            versions=doc["versions"],
        )

    async def set(
        self,
        tenant: str,
        namespace: str,
        key: str,
        value: Any,
        *,
        expect_version: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Write one key (``PUT``); ``expect_version`` becomes If-Match / If-None-Match."""
        doc = await self._http.request(
            "PUT",
            self._key_path(tenant, namespace, key),
            body={"value": value, "reason": reason},
            headers=_expect_headers(expect_version),
        )
        return self._result(tenant, namespace, doc)

    async def set_many(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Write several keys of one namespace as one change set (one revision)."""
        return await self.commit(tenant, namespace, values, expect=expect, reason=reason)

    async def delete(
        self,
        tenant: str,
        namespace: str,
        keys: str | Iterable[str],
        *,
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Delete keys (each gets a tombstone version); all must exist."""
        names = [keys] if isinstance(keys, str) else list(keys)
        return await self.commit(tenant, namespace, {}, deletes=names, expect=expect, reason=reason)

    async def rollback(
        self,
        tenant: str,
        namespace: str,
        key: str,
        to_version: int,
        *,
        expect_version: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Make ``to_version``'s value current again, as a new version."""
        doc = await self._http.request(
            "POST",
            f"{self._key_path(tenant, namespace, key)}/rollback",
            body={"to_version": to_version, "expect_version": expect_version, "reason": reason},
        )
        return self._result(tenant, namespace, doc)

    async def commit(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
        create: bool = True,
    ) -> WriteResult:
        """Commit one change set atomically (``POST .../namespaces/{ns}``).

        ``create=False`` checks that the tenant exists first (a separate
        request: a tenant deleted in between is created by the write).
        """
        self.plan(tenant, namespace, values, deletes=deletes, expect=expect)
        if not create:
            await self.info(tenant)
        body = {
            "values": dict(values), "deletes": list(deletes),
            "expect": dict(expect or {}), "reason": reason,
        }  # fmt: skip
        doc = await self._http.request("POST", self._ns_path(tenant, namespace), body=body)
        return self._result(tenant, namespace, doc)

    async def commit_across(
        self,
        tenant: str,
        values: Mapping[str, Mapping[str, Any]],
        *,
        deletes: Mapping[str, Sequence[str]] | None = None,
        expect: Mapping[str, Mapping[str, int]] | None = None,
        actor: str | None = None,
        reason: str = "",
        create: bool = True,
    ) -> WriteResult:
        """Commit one change set spanning namespaces (``POST .../changes``): one revision,
        all or nothing.

        Keyed by namespace as over Redis; the result's versions (and any
        conflict) name keys ``"namespace/key"``. The token needs the write
        right on every namespace named (one it does not see is
        :class:`NotFound`). ``create=False`` is checked by the server in the
        same atomic write.
        """
        # Checked locally first (the same errors, no request), like commit.
        plan_across(
            tenant_keys(validate_tenant(tenant)), values, deletes or {}, expect or {},
            max_keys=self.settings.max_keys_per_write,
            max_value_bytes=self.settings.max_value_bytes,
        )  # fmt: skip
        body = {
            "values": {ns: dict(v) for ns, v in values.items()},
            "deletes": {ns: list(d) for ns, d in (deletes or {}).items()},
            "expect": {ns: dict(e) for ns, e in (expect or {}).items()},
            "reason": reason, "create": create,
        }  # fmt: skip
        doc = await self._http.request("POST", f"{_API}/{_seg(tenant)}/changes", body=body)
        return self._result(tenant, "*", doc)

    async def changes_since(
        self, tenant: str, revision: int, *, limit: int = 1000
    ) -> list[ChangeEvent]:
        """Change events after ``revision``, oldest first, at most ``limit`` (``GET .../log``).

        Raises :class:`HistoryTrimmed` when the log no longer holds
        ``revision + 1``. A namespace-scoped token sees only its namespaces'
        events: a change set across namespaces with only their changes, and
        the events of the whole tenant; sensitive values come masked
        without the ``secrets`` right. Pages of at most 1,000 events are
        fetched until ``limit`` events are found or the log ends.
        """
        validate_tenant(tenant)
        if revision < 0 or limit < 1:
            raise InvalidInput("revision must be >= 0 and limit >= 1")
        path = f"{_API}/{_seg(tenant)}/log"
        events: list[ChangeEvent] = []
        since: int | None = revision
        while since is not None and len(events) < limit:
            page = min(LOG_PAGE, limit - len(events))
            doc = await self._get(path, {"since": since, "limit": page})
            events.extend(msgspec.convert(e, ChangeEvent) for e in doc["events"])
            since = doc["next_since"]
        return events[:limit]

    def plan(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
    ) -> ChangePlan:
        """Check a change set locally as the server will (no request; same errors)."""
        return super().plan(tenant, namespace, values, deletes=deletes, expect=expect)

    async def check(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> ChangePlan:
        """Every check :meth:`commit` makes, schema included (the server's dry run)."""
        plan = self.plan(tenant, namespace, values, deletes=deletes, expect=expect)
        body = {
            "values": dict(values), "deletes": list(deletes),
            "expect": dict(expect or {}), "reason": reason,
        }  # fmt: skip
        await self._http.request(
            "POST", self._ns_path(tenant, namespace), params={"dry_run": "true"}, body=body
        )
        return plan


_backends.register(HttpStore, "http", "https")
