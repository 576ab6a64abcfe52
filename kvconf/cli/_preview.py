"""``--dry-run``: the diff a change set would commit, computed from the current state.

Commands check the change set exactly as the write would (``Store.check``,
or the rollback planner) and then print what would change, key by key,
without writing anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .._codec import same_value
from .._store.ops import ANY_VERSION
from ..exceptions import KeyConflict, KeyNotFound, VersionConflict
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
    versions = {k: current[k].version if k in current else 0 for k in expect or {}}
    conflicts = [
        KeyConflict(k, v, versions[k])
        for k, v in (expect or {}).items()
        if (v == ANY_VERSION and versions[k] == 0) or (v != ANY_VERSION and v != versions[k])
    ]
    if conflicts:
        raise VersionConflict(tenant, namespace, conflicts)
    specs = await store.specs(tenant, namespace) if state is not None else {}
    return changes(namespace, current, values, deletes, specs, show_secrets)


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
