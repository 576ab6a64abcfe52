"""Comparing two namespaces (across tenants) and promoting the differences.

``staging/ai-12`` against ``acme/ai-12``: which keys only one side has, which
differ. :func:`compare_entries` and :func:`promotion_plan` are pure;
:func:`compare` reads both sides, :func:`promote` commits the plan as one
change set with compare-and-set on every key it touches, so a concurrent
write to the destination fails it whole (:class:`VersionConflict`).

>>> result = await compare(store, "staging", "ai-12", "acme", "ai-12")
>>> [(d.key, d.change) for d in result.differences]
[('timeout', 'different'), ('beta', 'only_left')]
>>> outcome = await promote(store, "staging", "ai-12", "acme", "ai-12", actor="ops")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import msgspec

from ._codec import same_value
from ._redis.names import validate_key
from .exceptions import InvalidInput
from .models import Entry, WriteResult
from .store import Store
from .timeline import Plan

__all__ = [
    "Comparison",
    "KeyComparison",
    "Promotion",
    "compare",
    "compare_entries",
    "parse_side",
    "promote",
    "promotion_plan",
]

Change = Literal["only_left", "only_right", "different"]


class KeyComparison(msgspec.Struct, frozen=True):
    """How one key differs: present on one side only, or with different values."""

    key: str
    change: Change
    left: Any = None
    right: Any = None
    left_version: int = 0
    right_version: int = 0


class Comparison(msgspec.Struct, frozen=True):
    """Every key that differs between ``left`` and ``right`` (``tenant/namespace``)."""

    left: str
    right: str
    differences: list[KeyComparison]
    same: int


class Promotion(msgspec.Struct, frozen=True):
    """What a promotion committed (or, in a dry run, would commit) to the destination."""

    source: str
    destination: str
    plan: Plan
    dry_run: bool
    result: WriteResult | None = None


def parse_side(text: str) -> tuple[str, str]:
    """``"tenant/namespace"`` → ``("tenant", "namespace")``; :class:`InvalidInput` otherwise."""
    tenant, sep, namespace = text.partition("/")
    if not sep or not tenant or not namespace or "/" in namespace:
        raise InvalidInput(f"expected TENANT/NAMESPACE, got {text!r}", field="side")
    return tenant, namespace


def compare_entries(
    left: Mapping[str, Entry],
    right: Mapping[str, Entry],
    *,
    left_name: str,
    right_name: str,
    hidden: Callable[[str], bool] | None = None,
) -> Comparison:
    """The keys that differ between two namespaces' entries, sorted by key (pure).

    A key ``hidden`` says is masked for the caller is always reported
    ``different`` when both sides have it: "same" would confirm a guessed secret.
    """
    out: list[KeyComparison] = []
    same = 0
    for key in sorted(set(left) | set(right)):
        a, b = left.get(key), right.get(key)
        if b is None and a is not None:
            out.append(KeyComparison(key, "only_left", a.value, None, a.version, 0))
        elif a is None and b is not None:
            out.append(KeyComparison(key, "only_right", None, b.value, 0, b.version))
        elif a is not None and b is not None:
            if same_value(a.value, b.value) and not (hidden is not None and hidden(key)):
                same += 1
            else:
                out.append(KeyComparison(key, "different", a.value, b.value, a.version, b.version))
    return Comparison(left_name, right_name, out, same)


async def compare(
    store: Store,
    left_tenant: str,
    left_ns: str,
    right_tenant: str,
    right_ns: str,
    *,
    hidden: Callable[[str], bool] | None = None,
) -> Comparison:
    """Read both namespaces and compare them (a missing namespace is empty).

    ``hidden``: keys masked for the caller (see :func:`compare_entries`).
    """
    left = await store.get_namespace(left_tenant, left_ns)
    right = await store.get_namespace(right_tenant, right_ns)
    return compare_entries(
        left, right, left_name=f"{left_tenant}/{left_ns}", right_name=f"{right_tenant}/{right_ns}",
        hidden=hidden,
    )  # fmt: skip


def promotion_plan(
    comparison: Comparison, *, destination_ns: str, keys: Iterable[str] | None = None,
    prune: bool = False,
) -> Plan:  # fmt: skip
    """The change set that makes the right side (destination) match the left (pure).

    Keys the source has (new or different) are set; keys only the destination
    has are deleted with ``prune`` and left alone otherwise. ``keys`` limits
    the plan to those keys (each must be a valid name). Every touched key is
    expected at its current destination version (0: absent).
    """
    wanted = None if keys is None else {validate_key(k) for k in keys}
    values: dict[str, Any] = {}
    deletes: list[str] = []
    expect: dict[str, int] = {}
    for d in comparison.differences:
        if wanted is not None and d.key not in wanted:
            continue
        if d.change == "only_right":
            if prune:
                deletes.append(d.key)
                expect[d.key] = d.right_version
            continue
        values[d.key] = d.left
        expect[d.key] = d.right_version
    return Plan(destination_ns, values, deletes, expect)


async def promote(
    store: Store,
    source_tenant: str,
    source_ns: str,
    dest_tenant: str,
    dest_ns: str,
    *,
    keys: Iterable[str] | None = None,
    prune: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    reason: str = "",
) -> Promotion:
    """Copy the differences from source to destination as one change set.

    A dry run runs every check the write makes (:meth:`Store.check`) and
    commits nothing; an empty plan commits nothing either. A destination
    tenant that does not exist is created by the commit.
    """
    left = await store.get_namespace(source_tenant, source_ns)
    # A destination tenant that does not exist yet is empty: the commit creates it.
    right = (
        await store.get_namespace(dest_tenant, dest_ns) if await store.exists(dest_tenant) else {}
    )
    comparison = compare_entries(
        left, right, left_name=f"{source_tenant}/{source_ns}", right_name=f"{dest_tenant}/{dest_ns}"
    )
    plan = promotion_plan(comparison, destination_ns=dest_ns, keys=keys, prune=prune)
    promo = Promotion(comparison.left, comparison.right, plan, dry_run)
    if not plan.values and not plan.deletes:
        return promo
    if dry_run:
        await store.check(
            dest_tenant, dest_ns, plan.values, deletes=plan.deletes, expect=plan.expect
        )
        return promo
    result = await store.commit(
        dest_tenant, dest_ns, plan.values, deletes=plan.deletes, expect=plan.expect,
        actor=actor, reason=reason or f"promoted from {comparison.left}",
    )  # fmt: skip
    return msgspec.structs.replace(promo, result=result)
