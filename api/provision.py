"""Creating tenants from a template or as a clone of another tenant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvconf._redis.names import DEFAULTS_NAMESPACE
from kvconf.exceptions import InvalidInput
from kvconf.store import Store

__all__ = ["provision"]


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
    values: dict[str, dict[str, Any]] = {}
    schemas = {}
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
    why = reason or (f"created from {source}" if source else "created")
    op = "create" if source is None else "clone" if whole else "template"
    await store.create_tenant(name, actor=actor, reason=why, op=op)
    for ns in sorted(schemas, key=lambda n: n != DEFAULTS_NAMESPACE):
        await store.set_schema(name, ns, schemas[ns], actor=actor, reason=why)
    for ns, keys in sorted(values.items()):
        if keys:
            await store.commit(name, ns, keys, actor=actor, reason=why, create=False)
    return await store.revision(name)
