"""The write script's arguments and replies, pure: change-set ops, audit text, outcomes.

:class:`~kvconf.store.Store` builds a change set's ops here, runs
``lua/write.lua`` and turns its reply into a :class:`WriteResult` or a
typed exception here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .. import _codec
from .._codec import as_text
from .._redis.names import validate_key
from ..exceptions import (
    EmptyChangeSet,
    InvalidInput,
    KeyConflict,
    KeyNotFound,
    TenantNotFound,
    Unavailable,
    VersionConflict,
)
from ..models import WriteResult

__all__ = [
    "ANY_VERSION",
    "MAX_ACTOR",
    "MAX_REASON",
    "Op",
    "audit_text",
    "change_ops",
    "check_count",
    "foreign_type",
    "outcome",
]

MAX_ACTOR = 256
MAX_REASON = 1024
# Versions are kept as 10 digits in history members; Lua prints larger numbers
# in exponent form, so nothing above this can be a real version.
MAX_VERSION = 9_999_999_999
#: An expected version meaning "the key exists, at any version" (``If-Match: *``).
ANY_VERSION = -1

#: (key, op + expected version, value JSON): ``("port", "s3", b"81")``.
Op = tuple[str, str, bytes]


def check_count(count: int, limit: int) -> None:
    """Refuse an empty change set or one over ``limit`` keys (before encoding values)."""
    if count == 0:
        raise EmptyChangeSet()
    if count > limit:
        raise InvalidInput(f"a change set holds at most {limit} keys, got {count}", limit=limit)


def change_ops(
    values: Mapping[str, Any],
    deletes: Sequence[str],
    expect: Mapping[str, int],
    max_value_bytes: int,
) -> list[Op]:
    """Validated ops of one namespace's sets, deletes and expected versions."""
    ops = [
        (validate_key(k), "s", _codec.encode_value(k, v, max_value_bytes))
        for k, v in values.items()
    ]
    for key in deletes:
        if validate_key(key) in values:
            raise InvalidInput(f"key {key!r} is both set and deleted", key=key)
        ops.append((key, "d", b""))
    if len(ops) != len({op[0] for op in ops}):
        raise InvalidInput("a key appears twice in the change set")
    for key, version in expect.items():
        if key not in values and key not in deletes:
            raise InvalidInput(f"expected version given for {key!r}, not in the change set")
        if type(version) is not int or not ANY_VERSION <= version <= MAX_VERSION:
            raise InvalidInput(
                f"expected version of {key!r} must be an integer from {ANY_VERSION} "
                f"(the key exists) to {MAX_VERSION}",
                key=key,
            )
    return [(key, f"{op}{_precondition(expect.get(key))}", data) for key, op, data in ops]


def _precondition(version: int | None) -> int:
    """The script's code of an expectation: -1 none, -2 the key exists, else the version."""
    if version is None:
        return -1
    return -2 if version == ANY_VERSION else version


def audit_text(field: str, text: object, limit: int) -> bytes:
    """``text`` as the JSON string the scripts record (actor, reason), or InvalidInput."""
    if not isinstance(text, str):
        raise InvalidInput(f"{field} must be a string", field=field)
    if len(text) > limit:
        raise InvalidInput(f"{field} is longer than {limit} characters", field=field)
    return _codec.encode(text)


def outcome(tenant: str, namespace: str, ops: list[Op], reply: list[Any]) -> WriteResult:
    """The write script's reply as a result, or the typed error it stands for.

    A ``schema`` reply (the schema changed since it was read) is the caller's
    to retry; ``reply[3] == 1`` on success means the write created the tenant.
    """
    status = reply[0]
    if status == b"ok":
        return WriteResult(
            tenant=tenant,
            namespace=namespace,
            revision=int(reply[1]),
            epoch=as_text(reply[2]),
            versions={op[0]: int(v) for op, v in zip(ops, reply[4:], strict=True)},
        )
    if status == b"conflict":
        conflicts = msgspec.json.decode(reply[1], type=list[KeyConflict])
        raise VersionConflict(tenant, namespace, conflicts)
    if status == b"missing":
        raise KeyNotFound(tenant, namespace, msgspec.json.decode(reply[1], type=list[str]))
    if status in (b"notenant", b"deleted"):
        raise TenantNotFound(tenant)
    if status == b"wrongtype":
        raise foreign_type(as_text(reply[1]))
    raise Unavailable(f"unexpected reply from the write script: {reply[0]!r}")


def foreign_type(key: str) -> Unavailable:
    """The error for a kvconf key that holds a Redis type kvconf never writes there."""
    return Unavailable(f"redis key {key} has a foreign type", reason="corrupt_state")
