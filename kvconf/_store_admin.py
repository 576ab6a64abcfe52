"""Schemas and tenant lifecycle of :class:`~kvconf.store.Store` (a base class of it)."""

from __future__ import annotations

import secrets
from typing import Any

from . import _codec
from ._codec import as_text
from ._redis.names import (
    AUDIT_KEY,
    AUDIT_LIMIT,
    DEFAULTS_NAMESPACE,
    TENANTS_KEY,
    TenantKeys,
    validate_namespace,
)
from ._store.ops import MAX_ACTOR, MAX_REASON, audit_text
from ._store_base import StoreBase, TenantSchemas, redis_errors, tenant_keys
from .exceptions import InvalidInput, TenantExists, TenantNotFound, Unavailable
from .models import KeySpec, Schema
from .schema import check_values, effective_specs, validate_schema

__all__ = ["AdminOps"]

_CREATE_OPS = ("create", "clone", "template")


class AdminOps(StoreBase):
    """Schemas (read, replace, check current values) and tenants (create, delete, undelete)."""

    # -- schemas ---------------------------------------------------------------

    @redis_errors
    async def schemas(self, tenant: str) -> dict[str, Schema]:
        """Every schema of a tenant by namespace (``_defaults``: tenant-wide)."""
        tk = tenant_keys(tenant)
        await self._require_tenant(tk)
        self._schemas.pop(tenant, None)
        return dict((await self._tenant_schemas(tk)).schemas)

    async def get_schema(self, tenant: str, namespace: str) -> Schema | None:
        """The schema set on ``namespace`` itself, or None."""
        validate_namespace(namespace)
        return (await self.schemas(tenant)).get(namespace)

    async def specs(self, tenant: str, namespace: str) -> dict[str, KeySpec]:
        """The merged key specs that apply to ``namespace`` (own over ``_defaults``)."""
        validate_namespace(namespace)
        return dict((await self._tenant_schemas(tenant_keys(tenant))).specs(namespace))

    @redis_errors
    async def set_schema(
        self,
        tenant: str,
        namespace: str,
        schema: Schema | None,
        *,
        actor: str | None = None,
        reason: str = "",
    ) -> int:
        """Replace (or with None remove) a namespace's schema; returns the revision.

        Refused with :class:`SchemaViolation` when current values break it.
        """
        tk = tenant_keys(tenant)
        validate_namespace(namespace)
        body = b""
        if schema is not None:
            body = _codec.encode(validate_schema(schema))
        actor_json = audit_text("actor", actor or self.settings.actor, MAX_ACTOR)
        reason_json = audit_text("reason", reason, MAX_REASON)
        for _ in range(5):
            self._schemas.pop(tenant, None)
            current = await self._tenant_schemas(tk)
            await self._check_current_values(tenant, current, namespace, schema)
            reply = await self._scripts(
                "schema",
                [tk.schema, tk.meta, tk.rev, tk.epoch, tk.log],
                [
                    namespace, body, current.gen, tenant, actor_json, reason_json,
                    _codec.now_iso(), secrets.token_hex(8), tk.changes_channel,
                    self.settings.log_limit,
                ],
            )  # fmt: skip
            if reply[0] == b"ok":
                self._schemas.pop(tenant, None)
                if reply[4] == 1:
                    await self.redis.sadd(TENANTS_KEY, tenant)
                return int(reply[1])
            if reply[0] in (b"notenant", b"deleted"):
                raise TenantNotFound(tenant)
        raise Unavailable(f"schema of {tenant!r} kept changing")

    async def _check_current_values(
        self, tenant: str, current: TenantSchemas, namespace: str, schema: Schema | None
    ) -> None:
        proposed = dict(current.schemas)
        if schema is None:
            proposed.pop(namespace, None)
        else:
            proposed[namespace] = schema
        try:
            state = await self.read_state(tenant)
        except TenantNotFound:
            return  # no values yet; the schema script creates the tenant
        targets = (
            state.namespaces
            if namespace == DEFAULTS_NAMESPACE
            else {namespace: state.namespaces.get(namespace, {})}
        )
        for ns, entries in targets.items():
            check_values(effective_specs(proposed, ns), {k: e.value for k, e in entries.items()})

    # -- tenants ---------------------------------------------------------------

    @redis_errors
    async def create_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = "", op: str = "create"
    ) -> None:
        """Create an empty tenant; :class:`TenantExists` if it exists.

        The creation is logged as revision 1, a ``tenant`` event with ``op``
        (``create``; ``clone`` or ``template`` when values follow), ``actor``
        and ``reason``.
        """
        tk = tenant_keys(tenant)
        if op not in _CREATE_OPS:  # it goes into the event JSON as it is
            raise InvalidInput(f"op must be one of {', '.join(_CREATE_OPS)}", field="op")
        reply = await self._tenant_op(tk, "create", actor, reason, op)
        if reply[0] == b"exists":
            raise TenantExists(tenant)
        await self.redis.sadd(TENANTS_KEY, tenant)

    @redis_errors
    async def delete_tenant(
        self, tenant: str, *, hard: bool = False, actor: str | None = None, reason: str = ""
    ) -> None:
        """Delete a tenant: soft (restorable with :meth:`undelete_tenant`) or hard.

        A soft delete hides every value and refuses writes; history stays, and
        the change log records it (a ``tenant`` event, ``op`` ``soft_delete``).
        A hard delete removes every key of the tenant, its log included, so it
        is recorded in the global audit list (:data:`AUDIT_KEY`) first.
        """
        tk = tenant_keys(tenant)
        reply = await self._tenant_op(tk, "delete", actor, reason, "soft_delete")
        if reply[0] == b"notenant" or (reply[0] == b"deleted" and not hard):
            raise TenantNotFound(tenant)
        await self.redis.srem(TENANTS_KEY, tenant)
        if hard:
            await self._audit_hard_delete(tk, actor, reason)
            batch: list[Any] = []
            async for name in self.redis.scan_iter(match=f"{tk.base}:*", count=1000):
                if as_text(name) != tk.meta:
                    batch.append(name)
                if len(batch) >= 500:
                    await self.redis.unlink(*batch)
                    batch.clear()
            if batch:
                await self.redis.unlink(*batch)
            await self.redis.unlink(tk.meta)
            self._schemas.pop(tenant, None)

    @redis_errors
    async def undelete_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = ""
    ) -> None:
        """Bring back a soft-deleted tenant with all its values (logged, ``op`` ``undelete``)."""
        tk = tenant_keys(tenant)
        reply = await self._tenant_op(tk, "undelete", actor, reason, "undelete")
        if reply[0] == b"notenant":
            raise TenantNotFound(tenant)
        await self.redis.sadd(TENANTS_KEY, tenant)

    async def _tenant_op(
        self, tk: TenantKeys, op: str, actor: str | None, reason: str, audit_op: str
    ) -> Any:
        return await self._scripts(
            "tenant",
            [tk.meta, tk.rev, tk.epoch, tk.namespaces, tk.log],
            [
                op, _codec.now_iso(), secrets.token_hex(8), tk.ns(""), tk.trash(), tk.tenant,
                audit_text("actor", actor or self.settings.actor, MAX_ACTOR),
                audit_text("reason", reason, MAX_REASON), tk.changes_channel,
                self.settings.log_limit, audit_op,
            ],
        )  # fmt: skip

    async def _audit_hard_delete(self, tk: TenantKeys, actor: str | None, reason: str) -> None:
        revision = await self.redis.get(tk.rev)
        record = {
            "tenant": tk.tenant, "op": "hard_delete", "actor": actor or self.settings.actor,
            "reason": reason, "ts": _codec.now_iso(), "revision": int(revision or 0),
        }  # fmt: skip
        # A list, newest first: the embedded store's journal persists lists.
        await self.redis.lpush(AUDIT_KEY, _codec.encode(record))
        await self.redis.ltrim(AUDIT_KEY, 0, AUDIT_LIMIT - 1)

    @redis_errors
    async def exists(self, tenant: str) -> bool:
        """True if the tenant exists and is not deleted."""
        try:
            await self._require_tenant(tenant_keys(tenant))
        except TenantNotFound:
            return False
        return True
