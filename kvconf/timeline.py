"""Time travel over a tenant's history: state at a revision, diffs, rollbacks.

Pure-ish functions over a :class:`~kvconf.store.Store`. The state of a tenant
(or one namespace) at revision ``R`` is rebuilt from its current state and the
tenant change log after ``R``: every key changed since ``R`` had, at ``R``, the
``old_version`` of its first change after ``R``, read from the key's history.
When the log or a key's history no longer reaches back that far the functions
raise :class:`HistoryTrimmed` or :class:`VersionNotFound`.

>>> before = await state_at(store, "acme", 10, ["ai-12"])
>>> changes = await diff(store, "acme", 10, namespace="ai-12")
>>> results = await rollback(store, "acme", 10, namespace="ai-12", actor="ops")

A rollback is one change set (across namespaces for a whole tenant) whose
compare-and-set expectations cover every key it touches, so a concurrent
write makes it fail whole (:class:`VersionConflict`) rather than interleave.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import msgspec

from ._codec import same_value
from .exceptions import InvalidInput
from .models import ChangeEvent, Entry, TenantState, WriteResult
from .store import Store

__all__ = [
    "Diff",
    "KeyDiff",
    "KeyState",
    "LogEvent",
    "Plan",
    "TimePoint",
    "diff",
    "diff_states",
    "events_between",
    "plan_rollback",
    "read_log",
    "rollback",
    "state_at",
]

_PAGE = 1000


#: One record of the tenant log (a change set, a schema change or a reset).
LogEvent = ChangeEvent


class KeyState(msgspec.Struct, frozen=True):
    """A key's value and metadata at some revision."""

    value: Any
    version: int
    revision: int
    updated_at: datetime
    updated_by: str


class TimePoint(msgspec.Struct, frozen=True):
    """Namespaces (name → key → state) of a tenant at one revision."""

    tenant: str
    revision: int
    namespaces: dict[str, dict[str, KeyState]]


class KeyDiff(msgspec.Struct, frozen=True):
    """How one key differs between two revisions."""

    namespace: str
    key: str
    change: Literal["added", "removed", "changed"]
    old: KeyState | None = None
    new: KeyState | None = None


class Diff(msgspec.Struct, frozen=True):
    """Every key that differs between two revisions, sorted by namespace and key."""

    tenant: str
    from_revision: int
    to_revision: int
    changes: list[KeyDiff]


class Plan(msgspec.Struct, frozen=True):
    """One namespace's change set that brings it back to a target state."""

    namespace: str
    values: dict[str, Any]
    deletes: list[str]
    expect: dict[str, int]


async def read_log(store: Store, tenant: str, since: int, *, limit: int = _PAGE) -> list[LogEvent]:
    """Log records after ``since``, oldest first (at most ``limit``).

    Raises :class:`HistoryTrimmed` when the log no longer holds ``since + 1``.
    """
    if since < 0 or limit < 1:
        raise InvalidInput("revision must be >= 0 and limit >= 1", field="since")
    return await store.changes_since(tenant, since, limit=limit)


async def events_between(store: Store, tenant: str, since: int, until: int) -> list[LogEvent]:
    """Every log record with ``since < revision <= until``, oldest first."""
    out: list[LogEvent] = []
    cursor = since
    while cursor < until:
        page = await read_log(store, tenant, cursor, limit=_PAGE)
        if not page:
            break
        for event in page:
            if event.revision > until:
                return out
            out.append(event)
        cursor = page[-1].revision
    return out


def _from_entry(entry: Entry) -> KeyState:
    return KeyState(entry.value, entry.version, entry.revision, entry.updated_at, entry.updated_by)


async def _reconstruct(
    store: Store, tenant: str, revision: int, namespaces: list[str] | None
) -> tuple[TenantState, TimePoint]:
    if revision < 0:
        raise InvalidInput("revision must be >= 0", field="revision")
    current = await store.read_state(tenant, namespaces)
    if revision > current.revision:
        raise InvalidInput(
            f"revision {revision} is in the future (current: {current.revision})",
            field="revision",
        )
    wanted = None if namespaces is None else set(namespaces)
    spaces = {
        ns: {k: _from_entry(e) for k, e in entries.items()}
        for ns, entries in current.namespaces.items()
        if wanted is None or ns in wanted
    }
    first_old: dict[tuple[str, str], int] = {}
    for event in await events_between(store, tenant, revision, current.revision):
        if event.type != "change":
            continue
        for change in event.changes:
            ns = event.namespace_of(change)
            if wanted is None or ns in wanted:
                first_old.setdefault((ns, change.key), change.old_version)
    for (ns, key), old in first_old.items():
        entries = spaces.setdefault(ns, {})
        entries.pop(key, None)
        if old == 0:
            continue
        ver = await store.version(tenant, ns, key, old)
        if not ver.deleted:
            entries[key] = KeyState(
                ver.value, ver.version, ver.revision, ver.updated_at, ver.updated_by
            )
    spaces = {ns: dict(sorted(e.items())) for ns, e in sorted(spaces.items()) if e}
    return current, TimePoint(tenant=tenant, revision=revision, namespaces=spaces)


async def state_at(
    store: Store, tenant: str, revision: int, namespaces: Iterable[str] | None = None
) -> TimePoint:
    """The tenant's namespaces (or only ``namespaces``) as they were at ``revision``."""
    names = None if namespaces is None else list(namespaces)
    return (await _reconstruct(store, tenant, revision, names))[1]


def diff_states(before: TimePoint, after: TimePoint) -> Diff:
    """Every key that differs between two time points (pure)."""
    changes: list[KeyDiff] = []
    for ns in sorted(set(before.namespaces) | set(after.namespaces)):
        old_ns, new_ns = before.namespaces.get(ns, {}), after.namespaces.get(ns, {})
        for key in sorted(set(old_ns) | set(new_ns)):
            old, new = old_ns.get(key), new_ns.get(key)
            if old is None and new is not None:
                changes.append(KeyDiff(ns, key, "added", None, new))
            elif new is None and old is not None:
                changes.append(KeyDiff(ns, key, "removed", old, None))
            elif old is not None and new is not None and old.version != new.version:
                changes.append(KeyDiff(ns, key, "changed", old, new))
    return Diff(before.tenant, before.revision, after.revision, changes)


async def diff(
    store: Store,
    tenant: str,
    from_revision: int,
    to_revision: int | None = None,
    *,
    namespace: str | None = None,
) -> Diff:
    """What changed in the tenant (or one namespace) between two revisions.

    ``to_revision`` defaults to the current revision.
    """
    names = None if namespace is None else [namespace]
    current, before = await _reconstruct(store, tenant, from_revision, names)
    if to_revision is None or to_revision == current.revision:
        after = TimePoint(
            tenant,
            current.revision,
            {
                ns: {k: _from_entry(e) for k, e in sorted(entries.items())}
                for ns, entries in current.namespaces.items()
                if entries and (names is None or ns in names)
            },
        )
    else:
        after = await state_at(store, tenant, to_revision, names)
    return diff_states(before, after)


def plan_rollback(
    current: dict[str, dict[str, Entry]], target: dict[str, dict[str, KeyState]]
) -> list[Plan]:
    """Change sets that turn ``current`` into ``target``, one per namespace (pure).

    Each plan expects every key it touches at its current version (0: absent).
    """
    plans: list[Plan] = []
    for ns in sorted(set(current) | set(target)):
        now, then = current.get(ns, {}), target.get(ns, {})
        values: dict[str, Any] = {}
        expect: dict[str, int] = {}
        for key, state in then.items():
            entry = now.get(key)
            if entry is None or not same_value(entry.value, state.value):
                values[key] = state.value
                expect[key] = entry.version if entry is not None else 0
        deletes = sorted(k for k in now if k not in then)
        for key in deletes:
            expect[key] = now[key].version
        if values or deletes:
            plans.append(Plan(ns, values, deletes, expect))
    return plans


async def rollback_plans(
    store: Store, tenant: str, to_revision: int, *, namespace: str | None = None
) -> list[Plan]:
    """The change sets :func:`rollback` would commit, one per namespace (a dry run).

    Each expects every key it touches at its current version; an empty list
    means the namespace (or tenant) already is as it was at ``to_revision``.
    """
    names = None if namespace is None else [namespace]
    current, target = await _reconstruct(store, tenant, to_revision, names)
    now = {ns: e for ns, e in current.namespaces.items() if names is None or ns in names}
    return plan_rollback(now, target.namespaces)


async def rollback(
    store: Store,
    tenant: str,
    to_revision: int,
    *,
    namespace: str | None = None,
    actor: str | None = None,
    reason: str = "",
) -> list[WriteResult]:
    """Bring a namespace (or every namespace of the tenant) back to ``to_revision``.

    The rollback is one new revision: one atomic change set (across
    namespaces for a tenant) with compare-and-set on every key it touches, so
    a concurrent write makes it fail whole with :class:`VersionConflict`. An
    unaffected tenant commits nothing and returns an empty list; otherwise the
    list holds the one result.
    """
    plans = await rollback_plans(store, tenant, to_revision, namespace=namespace)
    reason = reason or f"rollback to revision {to_revision}"
    if not plans:
        return []
    if len(plans) == 1:
        plan = plans[0]
        result = await store.commit(
            tenant, plan.namespace, plan.values, deletes=plan.deletes,
            expect=plan.expect, actor=actor, reason=reason, create=False,
        )  # fmt: skip
        return [result]
    result = await store.commit_across(
        tenant,
        {p.namespace: p.values for p in plans if p.values},
        deletes={p.namespace: p.deletes for p in plans if p.deletes},
        expect={p.namespace: p.expect for p in plans},
        actor=actor,
        reason=reason,
        create=False,
    )
    return [result]
