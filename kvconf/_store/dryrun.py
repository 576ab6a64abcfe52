"""Dry runs: a change set checked as the write checks it, against the state it would meet.

The API's ``?dry_run=true`` and the CLI's ``--dry-run`` both start here, so
they refuse what the write refuses, in the order the write script does;
each then shows the diff its own way (masked for its caller).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._redis.names import TenantKeys, validate_tenant
from ..exceptions import KeyConflict, KeyNotFound, SchemaProblem, SchemaViolation, TenantNotFound
from ..models import Entry
from .ops import ANY_VERSION
from .plan import across, plan_across

if TYPE_CHECKING:
    from ..store import Store

__all__ = ["Across", "check_across", "conflicts", "read_current"]


def conflicts(current: Mapping[str, Entry], expect: Mapping[str, int]) -> list[KeyConflict]:
    """The compare-and-set mismatches of one namespace (``-1``: the key exists, any version)."""
    found = []
    for key, wanted in expect.items():
        actual = current[key].version if key in current else 0
        if (wanted == ANY_VERSION and actual == 0) or wanted not in (ANY_VERSION, actual):
            found.append(KeyConflict(key, wanted, actual))
    return found


async def read_current(
    store: Store, tenant: str, namespaces: list[str], *, create: bool
) -> tuple[dict[str, Mapping[str, Entry]], int, bool]:
    """The current entries of ``namespaces``, the revision and whether the tenant exists,
    read atomically.

    A tenant that does not exist reads as empty at revision 0 when the write
    would create it; a soft-deleted one (or a missing one with ``create``
    false) raises :class:`TenantNotFound` as the write would.
    """
    try:
        state = await store.read_state(tenant, namespaces)
    except TenantNotFound:
        if not create:
            raise
        try:
            deleted = await store.is_deleted(tenant)
        except TenantNotFound:  # no such tenant: the write would create it
            deleted = False
        if deleted:  # soft-deleted: the write is refused too
            raise
        return {ns: {} for ns in namespaces}, 0, False
    return {ns: state.namespaces.get(ns, {}) for ns in namespaces}, state.revision, True


@dataclass(frozen=True, slots=True)
class Across:
    """A change set across namespaces that passed the write's checks, and the state it met."""

    #: The namespaces it touches (those with values first).
    names: list[str]
    current: dict[str, Mapping[str, Entry]]
    revision: int
    #: False when the tenant does not exist yet (the write would create it).
    known: bool
    #: Its compare-and-set mismatches, keys named ``namespace/key``.
    conflicts: list[KeyConflict]


async def check_across(
    store: Store,
    tenant: str,
    values: Mapping[str, Mapping[str, Any]],
    deletes: Mapping[str, Sequence[str]],
    expect: Mapping[str, Mapping[str, int]],
    *,
    create: bool,
    actor: str | None,
    reason: str,
) -> Across:
    """Check a change set across namespaces as :meth:`Store.commit_across` would.

    Raises what the write raises for names, limits, sizes and audit fields,
    every namespace's schema problems at once (keys ``namespace/key``), a
    missing tenant when ``create`` is false (or a soft-deleted one), and
    keys to delete that do not exist unless a compare-and-set conflict comes
    first (the write script checks those first); the conflicts are returned.
    """
    settings = store.settings
    plan_across(
        TenantKeys(validate_tenant(tenant)), values, deletes, expect,
        max_keys=settings.max_keys_per_write, max_value_bytes=settings.max_value_bytes,
    )  # fmt: skip
    names = list({**dict.fromkeys(values), **dict.fromkeys(deletes)})
    problems: list[SchemaProblem] = []
    for ns in names:
        if not (values.get(ns) or deletes.get(ns)):
            continue  # an empty entry: the write skips it too
        try:
            await store.check(tenant, ns, values.get(ns, {}), deletes=deletes.get(ns, ()),
                              expect=expect.get(ns, {}), actor=actor, reason=reason)  # fmt: skip
        except SchemaViolation as exc:  # every namespace's problems, as the write lists them
            problems.extend(across(ns, exc.problems))
    if problems:
        raise SchemaViolation(problems)
    current, revision, known = await read_current(store, tenant, names, create=create)
    found = sorted(
        (KeyConflict(f"{ns}/{c.key}", c.expected, c.actual)
         for ns, wanted in expect.items() for c in conflicts(current[ns], wanted)),
        key=lambda c: c.key,
    )  # fmt: skip
    missing = [f"{ns}/{k}" for ns in names for k in deletes.get(ns, ()) if k not in current[ns]]
    if missing and not found:
        raise KeyNotFound(tenant, "*", missing)
    return Across(names, current, revision, known, found)
