"""The validation plan of a change set, pure: everything checked before Redis is touched.

One plan serves the write, the dry run, the CLI and import, so a dry run can
never disagree with the write it previews. :func:`plan_change` (one
namespace) and :func:`plan_across` (several) check names, the key-count
limit, sizes and JSON-ness of values, duplicate and contradictory keys and
expected versions, and return a :class:`ChangePlan`; :meth:`ChangePlan.check_schema`
adds the schema check against a tenant's schemas at one generation. What
only the write script can decide (compare-and-set against the live
versions, deleted keys that exist, the tenant being alive) stays there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._redis.names import TenantKeys, validate_namespace
from ..exceptions import InvalidInput, SchemaProblem, SchemaViolation
from ..models import KeySpec
from ..schema import check_values
from .ops import Op, change_ops, check_count

__all__ = ["ChangePlan", "across", "plan_across", "plan_change"]


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """A validated change set, ready for the write script.

    ``namespace`` is ``"*"`` for a change set across namespaces, whose ops
    name keys as ``namespace/key``; ``values`` holds each namespace's new
    values for the schema check; ``keys`` are the script's declared keys.
    """

    tenant: TenantKeys
    namespace: str
    ops: list[Op]
    values: Mapping[str, Mapping[str, Any]]
    deletes: Mapping[str, Sequence[str]]
    keys: list[str]

    def check_schema(self, specs: Callable[[str], dict[str, KeySpec]]) -> None:
        """Raise :class:`SchemaViolation` listing every problem of every namespace.

        A plan across namespaces names each problem's key ``namespace/key``,
        as its ops and conflicts do.
        """
        problems: list[SchemaProblem] = []
        for namespace, values in self.values.items():
            if not values:
                continue
            try:
                check_values(specs(namespace), values)
            except SchemaViolation as exc:
                problems.extend(across(namespace, exc.problems) if self.namespace == "*"
                                else exc.problems)  # fmt: skip
        if problems:
            raise SchemaViolation(problems)


def across(namespace: str, problems: Sequence[SchemaProblem]) -> list[SchemaProblem]:
    """``problems`` of one namespace as a change set across namespaces names them:
    ``namespace/key``."""
    return [SchemaProblem(f"{namespace}/{p.key}", p.rule, p.message) for p in problems]


def plan_change(
    tk: TenantKeys,
    namespace: str,
    values: Mapping[str, Any],
    deletes: Sequence[str],
    expect: Mapping[str, int],
    *,
    max_keys: int,
    max_value_bytes: int,
) -> ChangePlan:
    """The plan of one namespace's change set (raises what the write would raise)."""
    validate_namespace(namespace)
    check_count(len(values) + len(deletes), max_keys)  # before encoding any value
    ops = change_ops(values, deletes, expect, max_value_bytes)
    return ChangePlan(
        tenant=tk,
        namespace=namespace,
        ops=ops,
        values={namespace: values},
        deletes={namespace: deletes},
        keys=[tk.ns(namespace), tk.hist(namespace)],
    )


def plan_across(
    tk: TenantKeys,
    values: Mapping[str, Mapping[str, Any]],
    deletes: Mapping[str, Sequence[str]],
    expect: Mapping[str, Mapping[str, int]],
    *,
    max_keys: int,
    max_value_bytes: int,
) -> ChangePlan:
    """The plan of a change set spanning namespaces, keyed by namespace."""
    unknown = set(expect) - set(values) - set(deletes)
    if unknown:
        raise InvalidInput(
            f"expected versions given for namespaces not in the change set: {sorted(unknown)}"
        )
    check_count(
        sum(len(v) for v in values.values()) + sum(len(d) for d in deletes.values()), max_keys
    )  # before encoding any value
    ops: list[Op] = []
    for namespace in {**dict.fromkeys(values), **dict.fromkeys(deletes)}:
        validate_namespace(namespace)
        for key, op, data in change_ops(
            values.get(namespace, {}),
            deletes.get(namespace, ()),
            expect.get(namespace, {}),
            max_value_bytes,
        ):
            ops.append((f"{namespace}/{key}", op, data))
    first = ops[0][0].partition("/")[0]
    return ChangePlan(
        tenant=tk,
        namespace="*",
        ops=ops,
        values=values,
        deletes=deletes,
        keys=[tk.ns(first), tk.hist(first)],
    )
