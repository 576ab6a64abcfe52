"""Dry-run writes: validate a change set and return the diff it would make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvconf._codec import same_value
from kvconf._store.ops import ANY_VERSION
from kvconf.exceptions import KeyNotFound, TenantNotFound

from .deps import Access, masker

__all__ = ["preview"]


async def preview(
    access: Access,
    namespace: str,
    values: Mapping[str, Any],
    deletes: Sequence[str],
    expect: Mapping[str, int],
    reason: str | None = None,
) -> dict[str, Any]:
    """What committing this change set would do, without committing it.

    Raises what the write would raise for invalid input (names, sizes, schema);
    compare-and-set mismatches are reported in ``conflicts`` instead.
    """
    store = access.store
    # The write's own checks, schema and audit fields included: the dry run
    # refuses what the write refuses.
    await store.check(
        access.tenant, namespace, values, deletes=deletes, expect=expect,
        actor=access.actor, reason=access.why(reason or ""),
    )  # fmt: skip
    try:
        state = await store.read_state(access.tenant, [namespace])
        current, revision = state.namespaces.get(namespace, {}), state.revision
    except TenantNotFound:
        try:
            deleted = await store.is_deleted(access.tenant)
        except TenantNotFound:  # no such tenant: the write would create it
            deleted = False
        if deleted:  # soft-deleted: the write is refused too
            raise
        current, revision = {}, 0
    missing = [k for k in deletes if k not in current]
    if missing:
        raise KeyNotFound(access.tenant, namespace, missing)
    mask = await masker(access, namespace)
    changes: list[dict[str, Any]] = []
    for key, value in values.items():
        entry = current.get(key)
        same = entry is not None and same_value(entry.value, value)
        if same and not mask.hides(key):  # "unchanged" would confirm a guessed secret
            kind = "unchanged"
        else:
            kind = "added" if entry is None else "changed"
        changes.append({
            "key": key, "change": kind,
            "old": None if entry is None else mask(key, entry.value),
            "old_version": 0 if entry is None else entry.version,
            "new": mask(key, value),
        })  # fmt: skip
    for key in deletes:
        entry = current[key]
        changes.append({
            "key": key, "change": "removed", "old": mask(key, entry.value),
            "old_version": entry.version, "new": None,
        })  # fmt: skip
    versions = {k: current[k].version if k in current else 0 for k in expect}
    conflicts = [
        {"key": k, "expected": v, "actual": versions[k]}
        for k, v in expect.items()
        if (v == ANY_VERSION and versions[k] == 0) or (v != ANY_VERSION and v != versions[k])
    ]
    return {
        "dry_run": True,
        "tenant": access.tenant,
        "namespace": namespace,
        "revision": revision,
        "would_commit": not conflicts,
        "conflicts": conflicts,
        "changes": changes,
    }
