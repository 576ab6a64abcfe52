"""Dry-run writes: validate a change set and return the diff it would make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvconf._codec import same_value
from kvconf._store.ops import ANY_VERSION
from kvconf._store.plan import across, plan_across
from kvconf.exceptions import KeyNotFound, SchemaProblem, SchemaViolation, TenantNotFound
from kvconf.models import Entry
from kvconf.store import tenant_keys

from .deps import Access, masker

__all__ = ["preview", "preview_across"]


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
    # The write's own checks, schema and audit fields included: the dry run
    # refuses what the write refuses.
    await access.store.check(
        access.tenant, namespace, values, deletes=deletes, expect=expect,
        actor=access.actor, reason=access.why(reason or ""),
    )  # fmt: skip
    current, revision = await _current(access, [namespace], create=True)
    missing = [k for k in deletes if k not in current[namespace]]
    if missing:
        raise KeyNotFound(access.tenant, namespace, missing)
    return await _diff(access, namespace, revision, current[namespace], values, deletes, expect)


async def preview_across(
    access: Access,
    values: Mapping[str, Mapping[str, Any]],
    deletes: Mapping[str, Sequence[str]],
    expect: Mapping[str, Mapping[str, int]],
    reason: str,
    *,
    create: bool,
) -> dict[str, Any]:
    """What committing a change set across namespaces would do: each namespace's diff,
    all read at one revision.

    Raises what :meth:`Store.commit_across` would raise for invalid input,
    a missing tenant (``create`` false) or keys to delete that do not
    exist; compare-and-set mismatches are reported per namespace instead.
    """
    store, settings = access.store, access.store.settings
    plan_across(
        tenant_keys(access.tenant), values, deletes, expect,
        max_keys=settings.max_keys_per_write, max_value_bytes=settings.max_value_bytes,
    )  # fmt: skip
    names = list({**dict.fromkeys(values), **dict.fromkeys(deletes)})
    problems: list[SchemaProblem] = []
    for namespace in names:  # values first, as the write checks the schema
        if values.get(namespace) or deletes.get(namespace):
            try:
                await store.check(
                    access.tenant, namespace, values.get(namespace, {}),
                    deletes=deletes.get(namespace, ()), expect=expect.get(namespace, {}),
                    actor=access.actor, reason=access.why(reason),
                )  # fmt: skip
            except SchemaViolation as exc:  # every namespace's problems, as the write lists them
                problems.extend(across(namespace, exc.problems))
    if problems:
        raise SchemaViolation(problems)
    current, revision = await _current(access, names, create=create)
    missing = [
        f"{ns}/{key}" for ns in names for key in deletes.get(ns, ()) if key not in current[ns]
    ]
    if missing and not any(_conflicts(current[ns], e) for ns, e in expect.items()):
        # the write script names them, after its compare-and-set conflicts
        raise KeyNotFound(access.tenant, "*", missing)
    previews = []
    for ns in names:
        changed, removed, expected = values.get(ns, {}), deletes.get(ns, ()), expect.get(ns, {})
        previews.append(await _diff(access, ns, revision, current[ns], changed, removed, expected))
    return {
        "dry_run": True,
        "tenant": access.tenant,
        "revision": revision,
        "would_commit": all(p["would_commit"] for p in previews),
        "namespaces": previews,
    }


async def _current(
    access: Access, namespaces: list[str], *, create: bool
) -> tuple[dict[str, dict[str, Entry]], int]:
    """The current entries of ``namespaces`` and the revision, read atomically.

    A tenant that does not exist reads as empty at revision 0 when the write
    would create it; a soft-deleted one (or a missing one with ``create``
    false) raises :class:`TenantNotFound` as the write would.
    """
    store = access.store
    try:
        state = await store.read_state(access.tenant, namespaces)
    except TenantNotFound:
        if not create:
            raise
        try:
            deleted = await store.is_deleted(access.tenant)
        except TenantNotFound:  # no such tenant: the write would create it
            deleted = False
        if deleted:  # soft-deleted: the write is refused too
            raise
        return {ns: {} for ns in namespaces}, 0
    return {ns: state.namespaces.get(ns, {}) for ns in namespaces}, state.revision


async def _diff(
    access: Access,
    namespace: str,
    revision: int,
    current: Mapping[str, Entry],
    values: Mapping[str, Any],
    deletes: Sequence[str],
    expect: Mapping[str, int],
) -> dict[str, Any]:
    """One namespace's preview: each key's change and the compare-and-set conflicts."""
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
        entry = current.get(key)
        if entry is None:  # missing, beside a conflict that is reported first
            continue
        changes.append({
            "key": key, "change": "removed", "old": mask(key, entry.value),
            "old_version": entry.version, "new": None,
        })  # fmt: skip
    conflicts = _conflicts(current, expect)
    return {
        "dry_run": True,
        "tenant": access.tenant,
        "namespace": namespace,
        "revision": revision,
        "would_commit": not conflicts,
        "conflicts": conflicts,
        "changes": changes,
    }


def _conflicts(current: Mapping[str, Entry], expect: Mapping[str, int]) -> list[dict[str, Any]]:
    """The compare-and-set mismatches of one namespace (``-1``: the key exists, any version)."""
    found = []
    for key, wanted in expect.items():
        actual = current[key].version if key in current else 0
        if (wanted == ANY_VERSION and actual == 0) or wanted not in (ANY_VERSION, actual):
            found.append({"key": key, "expected": wanted, "actual": actual})
    return found
