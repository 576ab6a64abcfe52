"""kvconf's values: entries, versions, change events, schemas. All frozen.

These are msgspec Structs so that encoding and decoding them is cheap and
typed; the wire and storage layout is in :mod:`kvconf._codec`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = [
    "ChangeEvent",
    "Entry",
    "Explanation",
    "KeyChange",
    "KeySpec",
    "LayerName",
    "LayerValue",
    "Schema",
    "TenantInfo",
    "TenantState",
    "ValueType",
    "Version",
    "WriteResult",
]

ValueType = Literal["str", "int", "float", "bool", "json"]
LayerName = Literal["namespace", "tenant_defaults", "environment", "schema_default"]


class Entry(msgspec.Struct, frozen=True, gc=False):
    """The current value of one key with its metadata.

    ``version`` counts writes to this key (1 on first write, deletes count too);
    ``revision`` is the tenant revision of the change set that wrote it.
    Not tracked by the garbage collector (``gc=False``): a watcher holds one
    per cached key and a JSON value cannot refer back to its entry.
    """

    value: Any
    version: int
    revision: int
    updated_at: datetime
    updated_by: str


class Version(msgspec.Struct, frozen=True):
    """One version of a key from its history (``deleted`` marks a tombstone)."""

    version: int
    revision: int
    deleted: bool
    updated_at: datetime
    updated_by: str
    reason: str
    value: Any = None


class KeyChange(msgspec.Struct, frozen=True, gc=False):
    """One key's part of a change event (``old_version`` 0: the key was absent).

    ``namespace`` is set only in events of change sets across namespaces
    (event ``namespace == "*"``); otherwise the key is in the event's namespace.
    Use :meth:`ChangeEvent.namespace_of`.
    """

    key: str
    version: int
    old_version: int
    deleted: bool = False
    value: Any = None
    namespace: str = ""


class ChangeEvent(msgspec.Struct, frozen=True, gc=False):
    """The record of one tenant revision, as logged and published.

    ``type`` is ``"change"`` for a committed change set, ``"schema"`` when a
    schema changed (no key changes), and ``"reset"`` when the tenant's state
    was replaced wholesale (restore): watchers re-list. ``"tenant"`` records
    a lifecycle change (``op``): watchers re-read the state. ``namespace`` is
    ``"*"`` for a change set across namespaces.
    """

    tenant: str
    epoch: str
    revision: int
    namespace: str
    actor: str
    reason: str
    ts: datetime
    changes: list[KeyChange] = []
    #: ``change``, ``schema``, ``reset`` or ``tenant``; a reader meeting a type
    #: it does not know (a newer kvconf's) re-reads the state.
    type: str = "change"
    #: For ``type="tenant"``: ``create``, ``clone``, ``template``,
    #: ``soft_delete`` or ``undelete`` (hard deletes go to the audit stream).
    op: str = ""
    #: The ``X-Request-ID`` of the API request that made the change ("" when
    #: it came from elsewhere): the change log links to the server's logs.
    request_id: str = ""

    def namespace_of(self, change: KeyChange) -> str:
        """The namespace of one of this event's changes."""
        return change.namespace or self.namespace


class WriteResult(msgspec.Struct, frozen=True):
    """What a committed write produced: the new revision and each key's version."""

    tenant: str
    namespace: str
    revision: int
    epoch: str
    versions: dict[str, int]


class KeySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Schema of one key.

    ``min``/``max`` bound numbers, ``max_length`` bounds strings and arrays,
    ``choices`` lists the allowed values. ``sensitive`` keys are masked for
    callers without the right to read secrets. ``category`` groups keys for
    display and filtering (``?category=slack``, ``kvconf get --category``): a
    short name of ``A-Z a-z 0-9 _ . -``.
    """

    type: ValueType = "json"
    default: Any | msgspec.UnsetType = msgspec.UNSET
    description: str = ""
    sensitive: bool = False
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None
    max_length: int | None = None
    category: str | None = None


class Schema(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Schema of a namespace (or of the tenant, set on ``_defaults``)."""

    keys: dict[str, KeySpec] = {}
    description: str = ""


class LayerValue(msgspec.Struct, frozen=True):
    """A value found in one layer of an effective read."""

    layer: LayerName
    value: Any


class Explanation(msgspec.Struct, frozen=True):
    """Why an effective read returned what it did.

    ``layer`` is the winning layer (None when no layer has the key);
    ``shadowed`` lists the lower layers that also had a value, in order.
    """

    key: str
    value: Any
    layer: LayerName | None
    shadowed: list[LayerValue] = []
    sensitive: bool = False


class TenantState(msgspec.Struct, frozen=True):
    """A tenant's whole current state, read atomically at one revision."""

    tenant: str
    epoch: str
    revision: int
    namespaces: dict[str, dict[str, Entry]]
    schema_gen: int = 0


class TenantInfo(msgspec.Struct, frozen=True):
    """A tenant's summary: revision, epoch, namespaces, creation time."""

    tenant: str
    revision: int
    epoch: str
    namespaces: list[str]
    created_at: datetime | None = None
