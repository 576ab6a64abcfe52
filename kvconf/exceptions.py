"""The one exception tree of kvconf.

Every refusal the library makes is one of these; the REST API maps them to
statuses in one table (``api/errors.py``), the CLI to exit codes.

::

    KvconfError
    ├── NotFound
    │   ├── TenantNotFound
    │   ├── KeyNotFound
    │   ├── VersionNotFound
    │   └── SnapshotNotFound
    ├── Conflict
    │   ├── VersionConflict          (compare-and-set mismatch, per key)
    │   ├── TenantExists
    │   └── HistoryTrimmed           (asked for revisions the log no longer holds)
    ├── InvalidInput
    │   ├── InvalidName
    │   ├── InvalidValue
    │   ├── ValueTooLarge
    │   ├── EmptyChangeSet
    │   ├── SchemaViolation          (lists every problem)
    │   └── InvalidSchema
    ├── Unauthorized                 (a kvconf server refused the token: none, unknown, expired)
    ├── Forbidden                    (the token lacks the right for the operation)
    ├── Unavailable                  (Redis or the kvconf server unreachable, refused, corrupt)
    └── SnapshotError
        ├── SnapshotCorrupt
        │   └── JournalCorrupt       (embedded journal damaged before its end)
        └── SnapshotVersionUnsupported

Each class carries structured details (``.details``) suitable for a
machine-readable error body; ``str(exc)`` is the human sentence.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "Conflict",
    "EmptyChangeSet",
    "Forbidden",
    "HistoryTrimmed",
    "InvalidInput",
    "InvalidName",
    "InvalidSchema",
    "InvalidValue",
    "JournalCorrupt",
    "KeyConflict",
    "KeyNotFound",
    "KvconfError",
    "NotFound",
    "SchemaProblem",
    "SchemaViolation",
    "SnapshotCorrupt",
    "SnapshotError",
    "SnapshotNotFound",
    "SnapshotVersionUnsupported",
    "TenantExists",
    "TenantNotFound",
    "Unauthorized",
    "Unavailable",
    "ValueTooLarge",
    "VersionConflict",
    "VersionNotFound",
]


class KvconfError(Exception):
    """Root of every error kvconf raises on purpose."""

    #: Stable machine-readable code, e.g. ``"version_conflict"``.
    code: str = "kvconf_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready mapping: ``code``, ``message`` and details."""
        return {"code": self.code, "message": self.message, **self.details}


# -- not found ---------------------------------------------------------------


class NotFound(KvconfError):
    """Something named does not exist."""

    code = "not_found"


class TenantNotFound(NotFound):
    """The tenant does not exist (or was deleted)."""

    code = "tenant_not_found"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} does not exist", tenant=tenant)
        self.tenant = tenant


class KeyNotFound(NotFound):
    """One or more keys do not exist in the namespace."""

    code = "key_not_found"

    def __init__(self, tenant: str, namespace: str, keys: list[str]) -> None:
        names = ", ".join(repr(k) for k in keys)
        super().__init__(
            f"key {names} not found in {tenant}/{namespace}",
            tenant=tenant,
            namespace=namespace,
            keys=keys,
        )
        self.keys = keys


class VersionNotFound(NotFound):
    """The asked-for version of a key is not in its (trimmed) history."""

    code = "version_not_found"

    def __init__(self, tenant: str, namespace: str, key: str, version: int) -> None:
        super().__init__(
            f"version {version} of {tenant}/{namespace}/{key} is not in its history",
            tenant=tenant,
            namespace=namespace,
            key=key,
            version=version,
        )


class SnapshotNotFound(NotFound):
    """No snapshot file at the given path or name."""

    code = "snapshot_not_found"


# -- conflicts -----------------------------------------------------------------


class KeyConflict(msgspec.Struct, frozen=True):
    """One key whose compare-and-set precondition failed (0 = absent)."""

    key: str
    expected: int
    actual: int


class Conflict(KvconfError):
    """The request contradicts the current state."""

    code = "conflict"


class VersionConflict(Conflict):
    """Compare-and-set failed: nothing was written.

    ``conflicts`` names each key with the version the caller expected and the
    version it actually has (0 means the key does not exist).
    """

    code = "version_conflict"

    def __init__(self, tenant: str, namespace: str, conflicts: list[KeyConflict]) -> None:
        parts = ", ".join(f"{c.key} (expected {c.expected}, is {c.actual})" for c in conflicts)
        super().__init__(
            f"version conflict in {tenant}/{namespace}: {parts}",
            tenant=tenant,
            namespace=namespace,
            conflicts=[msgspec.structs.asdict(c) for c in conflicts],
        )
        self.conflicts = conflicts


class TenantExists(Conflict):
    """Creating a tenant that already exists."""

    code = "tenant_exists"

    def __init__(self, tenant: str) -> None:
        super().__init__(f"tenant {tenant!r} already exists", tenant=tenant)


class HistoryTrimmed(Conflict):
    """The tenant log no longer holds the asked-for revisions: resynchronise."""

    code = "history_trimmed"

    def __init__(self, tenant: str, since: int, oldest: int) -> None:
        super().__init__(
            f"the change log of {tenant!r} no longer holds revision {since + 1} "
            f"(oldest kept: {oldest})",
            tenant=tenant,
            since=since,
            oldest=oldest,
        )
        self.since = since
        self.oldest = oldest


# -- invalid input -------------------------------------------------------------


class InvalidInput(KvconfError):
    """The caller's input is refused before anything is written."""

    code = "invalid_input"


class InvalidName(InvalidInput):
    """A tenant, namespace or key name breaks the naming rules."""

    code = "invalid_name"

    def __init__(self, kind: str, name: object, reason: str) -> None:
        super().__init__(f"invalid {kind} name {name!r}: {reason}", field=kind, reason=reason)
        self.kind = kind
        self.reason = reason


class InvalidValue(InvalidInput):
    """A value is not representable as JSON or is otherwise unusable."""

    code = "invalid_value"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid value for {key!r}: {reason}", key=key, reason=reason)


class ValueTooLarge(InvalidInput):
    """An encoded value (or request) exceeds the configured size limit."""

    code = "value_too_large"

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(
            f"value for {key!r} is {size} bytes, over the limit of {limit}",
            key=key,
            size=size,
            limit=limit,
        )


class EmptyChangeSet(InvalidInput):
    """A write with no keys in it."""

    code = "empty_change_set"

    def __init__(self) -> None:
        super().__init__("a change set needs at least one key")


class SchemaProblem(msgspec.Struct, frozen=True):
    """One rule one value broke."""

    key: str
    rule: str
    message: str


class SchemaViolation(InvalidInput):
    """A write breaks the schema; ``problems`` lists every broken rule."""

    code = "schema_violation"

    def __init__(self, problems: list[SchemaProblem]) -> None:
        text = "; ".join(f"{p.key}: {p.message}" for p in problems)
        super().__init__(
            f"schema violation: {text}",
            problems=[msgspec.structs.asdict(p) for p in problems],
        )
        self.problems = problems


class InvalidSchema(InvalidInput):
    """A schema document itself is malformed or self-contradictory."""

    code = "invalid_schema"


# -- access (a kvconf server's answer; Redis has no tokens) ------------------------


class Unauthorized(KvconfError):
    """No valid bearer token was presented (missing, unknown, revoked or expired)."""

    code = "unauthorized"


class Forbidden(KvconfError):
    """The token is valid but lacks the right for this operation."""

    code = "forbidden"


# -- availability ----------------------------------------------------------------


class Unavailable(KvconfError):
    """Redis could not be reached, refused the command, or holds corrupt state."""

    code = "unavailable"


# -- snapshots -------------------------------------------------------------------


class SnapshotError(KvconfError):
    """A snapshot file cannot be used."""

    code = "snapshot_error"


class SnapshotCorrupt(SnapshotError):
    """The file fails its checksum or structure checks."""

    code = "snapshot_corrupt"


class JournalCorrupt(SnapshotCorrupt):
    """The embedded store's journal has a damaged record followed by whole ones.

    Details: ``path``, ``offset`` (byte of the damaged record) and ``lost``
    (records after it that starting from the intact part would drop).
    ``kvconf snapshot recover`` keeps the file aside and starts from the
    intact part.
    """

    code = "journal_corrupt"


class SnapshotVersionUnsupported(SnapshotError):
    """The file's format version is not one this kvconf can read."""

    code = "snapshot_version_unsupported"
