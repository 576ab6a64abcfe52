"""``--dry-run``: the diff a change set would commit, computed from the current state.

Commands check the change set exactly as the write would (``Store.check``,
or the rollback planner) and then print what would change, key by key,
without writing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._codec import same_value
from .._store.dryrun import check_across, conflicts
from ..exceptions import KeyNotFound, VersionConflict
from ..models import Entry, KeySpec
from ..schema import mask_value
from ..store import Store
from ._output import Format, emit, line, text


def changes(
    namespace: str,
    current: Mapping[str, Entry],
    values: Mapping[str, Any],
    deletes: Sequence[str],
    specs: Mapping[str, KeySpec],
    show_secrets: bool,
) -> list[dict[str, Any]]:
    """One row per touched key: ``added``, ``changed``, ``unchanged`` or ``removed``."""

    def shown(key: str, value: Any) -> Any:
        return value if show_secrets else mask_value(value, specs.get(key))

    rows: list[dict[str, Any]] = []
    for key in sorted({*values, *deletes}):
        entry = current.get(key)
        if key in deletes:
            kind, new = "removed", None
        elif entry is None:
            kind, new = "added", shown(key, values[key])
        else:
            same = same_value(entry.value, values[key])
            hidden = not show_secrets and mask_value(0, specs.get(key)) != 0
            # "unchanged" for a masked key would confirm a guessed secret
            kind = "unchanged" if same and not hidden else "changed"
            new = shown(key, values[key])
        rows.append({
            "namespace": namespace, "key": key, "change": kind,
            "old": None if entry is None else shown(key, entry.value),
            "old_version": 0 if entry is None else entry.version,
            "new": new,
        })  # fmt: skip
    return rows


async def namespace_changes(
    store: Store,
    tenant: str,
    namespace: str,
    values: Mapping[str, Any],
    deletes: Sequence[str],
    show_secrets: bool,
    expect: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """:func:`changes` against the namespace's current state (empty for a new tenant).

    Checks what only the write script checks, against the state just read:
    deleted keys must exist (:class:`KeyNotFound`) and ``expect`` must match
    (:class:`VersionConflict`), so the dry run exits as the write would.
    """
    await store.check(tenant, namespace, values, deletes=deletes, expect=expect)
    state = await store.read_state(tenant, [namespace]) if await store.exists(tenant) else None
    current = {} if state is None else state.namespaces.get(namespace, {})
    missing = [k for k in deletes if k not in current]
    if missing:
        raise KeyNotFound(tenant, namespace, missing)
    found = conflicts(current, expect or {})
    if found:
        raise VersionConflict(tenant, namespace, found)
    specs = await store.specs(tenant, namespace) if state is not None else {}
    return changes(namespace, current, values, deletes, specs, show_secrets)


async def across_changes(
    store: Store,
    tenant: str,
    values: Mapping[str, Mapping[str, Any]],
    deletes: Mapping[str, Sequence[str]],
    expect: Mapping[str, Mapping[str, int]],
    *,
    create: bool,
    actor: str | None,
    reason: str,
    show_secrets: bool,
) -> list[dict[str, Any]]:
    """:func:`changes` of a change set across namespaces, every namespace read at one revision.

    Refuses what :meth:`Store.commit_across` refuses, with the same errors:
    names, limits and sizes, every namespace's schema problems at once (keys
    ``namespace/key``), a missing tenant when ``create`` is false (or a
    soft-deleted one), deleted keys that do not exist, and ``expect``
    mismatches (:class:`VersionConflict` naming ``namespace/key``).
    """
    checked = await check_across(store, tenant, values, deletes, expect, create=create,
                                 actor=actor, reason=reason)  # fmt: skip
    if checked.conflicts:
        raise VersionConflict(tenant, "*", checked.conflicts)
    rows: list[dict[str, Any]] = []
    for ns in checked.names:
        specs = await store.specs(tenant, ns) if checked.known else {}
        rows.extend(changes(ns, checked.current[ns], values.get(ns, {}), deletes.get(ns, ()),
                            specs, show_secrets))  # fmt: skip
    return rows


def show(fmt: Format, tenant: str, rows: list[dict[str, Any]], **extra: Any) -> None:
    """Print a dry run's diff: a banner and a table, or one JSON/YAML document."""
    if fmt in (Format.json, Format.yaml):
        emit(fmt, {"dry_run": True, "tenant": tenant, **extra, "changes": rows})
        return
    if fmt is Format.value:
        emit(fmt, None, values=[r["new"] for r in rows if r["change"] != "removed"])
        return
    line(f"dry run: nothing was written ({len(rows)} key(s) would change in {tenant})")

    def cell(row: dict[str, Any], side: str) -> str:
        if side == "old" and not row["old_version"]:
            return "-"
        if side == "new" and row["change"] == "removed":
            return "-"
        return text(row[side])

    emit(
        Format.table,
        None,
        columns=("namespace", "key", "change", "old", "new"),
        rows=[(r["namespace"], r["key"], r["change"], cell(r, "old"), cell(r, "new"))
              for r in rows],
    )  # fmt: skip
