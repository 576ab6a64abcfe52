"""Dry-run writes: validate a change set and return the diff it would make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from kvconf._codec import same_value
from kvconf._store.dryrun import check_across, conflicts, read_current
from kvconf.exceptions import KeyNotFound
from kvconf.models import Entry

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
    current, revision, _ = await read_current(access.store, access.tenant, [namespace], create=True)
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
    checked = await check_across(
        access.store, access.tenant, values, deletes, expect, create=create,
        actor=access.actor, reason=access.why(reason),
    )  # fmt: skip
    previews = []
    for ns in checked.names:
        changed, removed, expected = values.get(ns, {}), deletes.get(ns, ()), expect.get(ns, {})
        previews.append(
            await _diff(
                access, ns, checked.revision, checked.current[ns], changed, removed, expected
            )
        )
    return {
        "dry_run": True,
        "tenant": access.tenant,
        "revision": checked.revision,
        "would_commit": all(p["would_commit"] for p in previews),
        "namespaces": previews,
    }


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
    found = [msgspec.structs.asdict(c) for c in conflicts(current, expect)]
    return {
        "dry_run": True,
        "tenant": access.tenant,
        "namespace": namespace,
        "revision": revision,
        "would_commit": not found,
        "conflicts": found,
        "changes": changes,
    }
