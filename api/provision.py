"""Creating tenants from a template or as a clone of another tenant.

All or nothing: everything that can be checked without Redis (override
shapes, names, values, sizes, the schema the new tenant will have) is checked
before the tenant is created. Should a step still fail after the tenant exists (Redis lost
midway), the half-made tenant is deleted again, so a retry is not a 409.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kvconf._redis.names import DEFAULTS_NAMESPACE, validate_tenant
from kvconf._store.ops import MAX_ACTOR, MAX_REASON, audit_text
from kvconf.exceptions import InvalidInput, KvconfError, TenantExists
from kvconf.models import Schema
from kvconf.schema import effective_specs
from kvconf.store import Store

__all__ = ["provision"]

log = logging.getLogger("kvconf.api")


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
