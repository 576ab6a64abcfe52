"""Tenants as a whole: listing with their state, and creating from a template or a clone.

Used by the REST API (``POST /api/v1/tenants``) and the CLI (``kvconf tenant``)
alike, so both create tenants the same way.

>>> await provision(store, "beta", source="acme", whole=False,
...                 overrides={"_defaults": {"region": "eu"}}, actor="ops", reason="")
3
>>> [(t.tenant, t.state) for t in await tenant_states(store, include_deleted=True)]
[('acme', 'live'), ('beta', 'live'), ('old', 'deleted')]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec
from redis.exceptions import RedisError

from ._codec import as_text
from ._redis.names import (
    DEFAULTS_NAMESPACE,
    TENANT_META_PATTERN,
    TenantKeys,
    tenant_from_key,
    validate_tenant,
)
from ._store.ops import MAX_ACTOR, MAX_REASON, audit_text
from .exceptions import InvalidInput, InvalidName, KvconfError, TenantExists, Unavailable
from .models import Schema
from .schema import effective_specs
from .store import Store

log = logging.getLogger("kvconf")

__all__ = ["TenantStatus", "provision", "tenant_states"]


class TenantStatus(msgspec.Struct, frozen=True):
    """A tenant's name and state: ``live``, or ``deleted`` (soft, restorable)."""

    tenant: str
    state: Literal["live", "deleted"]
    created_at: datetime | None = None
    deleted_at: datetime | None = None


def _when(raw: Any) -> datetime | None:
    return None if raw is None else datetime.fromisoformat(as_text(raw))


async def tenant_states(store: Store, *, include_deleted: bool = False) -> list[TenantStatus]:
    """Every live tenant, sorted; with ``include_deleted`` also the soft-deleted ones.

    Soft-deleted tenants are no longer listed in ``kvconf:tenants``, so they
    are found by one SCAN of tenant metadata (an operator command, not a hot path).
    """
    if not include_deleted:
        return [TenantStatus(name, "live") for name in await store.tenants()]
    try:
        names: set[str] = set(await store.tenants())
        async for raw in store.redis.scan_iter(match=TENANT_META_PATTERN, count=5000):
            name = tenant_from_key(as_text(raw))
            if name is not None:
                try:
                    names.add(validate_tenant(name))
                except InvalidName:  # not a name kvconf writes: foreign data
                    continue
        out: list[TenantStatus] = []
        for name in sorted(names):
            created, deleted = await store.redis.hmget(
                TenantKeys(name).meta, "created_at", "deleted_at"
            )
            if created is None and deleted is None:
                continue
            state: Literal["live", "deleted"] = "deleted" if deleted is not None else "live"
            out.append(TenantStatus(name, state, _when(created), _when(deleted)))
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
    return out


async def provision(
    store: Store,
    name: str,
    *,
    source: str | None,
    whole: bool,
    overrides: Mapping[str, Mapping[str, Any]],
    actor: str,
    reason: str,
) -> int:
    """Create tenant ``name``; copy ``source``'s schemas and values; apply overrides.

    ``whole`` copies every namespace (a clone); otherwise only ``_defaults``
    (a template). Returns the new tenant's revision.
    """
    validate_tenant(name)
    values: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Schema] = {}
    if source is not None:
        schemas = await store.schemas(source)
        state = await store.read_state(source)
        for ns, entries in state.namespaces.items():
            if entries and (whole or ns == DEFAULTS_NAMESPACE):
                values[ns] = {k: e.value for k, e in entries.items()}
    for ns, keys in overrides.items():
        if not isinstance(keys, Mapping):
            raise InvalidInput(f"overrides of {ns!r} must be an object", field="overrides")
        values.setdefault(ns, {}).update(keys)
    values = {ns: keys for ns, keys in sorted(values.items()) if keys}
    why = reason or (f"created from {source}" if source else "created")
    _check(store, name, schemas, values, actor, why)
    op = "create" if source is None else "clone" if whole else "template"
    await store.create_tenant(name, actor=actor, reason=why, op=op)
    try:
        for ns in sorted(schemas, key=lambda n: n != DEFAULTS_NAMESPACE):
            await store.set_schema(name, ns, schemas[ns], actor=actor, reason=why)
        for ns, keys in values.items():
            await store.commit(name, ns, keys, actor=actor, reason=why, create=False)
        return await store.revision(name)
    except BaseException as exc:
        if not isinstance(exc, TenantExists):
            await _undo(store, name)
        raise


def _check(
    store: Store,
    name: str,
    schemas: Mapping[str, Schema],
    values: Mapping[str, Mapping[str, Any]],
    actor: str,
    reason: str,
) -> None:
    """Everything the writes would refuse, checked before anything is created."""
    audit_text("actor", actor, MAX_ACTOR)
    audit_text("reason", reason, MAX_REASON)
    for ns, keys in values.items():
        plan = store.plan(name, ns, keys)  # the write's own checks
        plan.check_schema(lambda namespace: effective_specs(schemas, namespace))


async def _undo(store: Store, name: str) -> None:
    try:
        await store.delete_tenant(name, hard=True)
    except KvconfError as exc:  # the original error is the one to report
        log.warning("could not remove half-created tenant %s: %s", name, exc)
