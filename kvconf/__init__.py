"""kvconf: a multi-tenant, versioned configuration store on Redis with hot reload.

The public names are re-exported here; everything in an underscore module is
internal. See the README for a tour.
"""

from .config import Settings
from .exceptions import (
    Conflict,
    EmptyChangeSet,
    HistoryTrimmed,
    InvalidInput,
    InvalidName,
    InvalidSchema,
    InvalidValue,
    KeyConflict,
    KeyNotFound,
    KvconfError,
    NotFound,
    SchemaProblem,
    SchemaViolation,
    SnapshotCorrupt,
    SnapshotError,
    SnapshotNotFound,
    SnapshotVersionUnsupported,
    TenantExists,
    TenantNotFound,
    Unavailable,
    ValueTooLarge,
    VersionConflict,
    VersionNotFound,
)
from .models import (
    ChangeEvent,
    Entry,
    Explanation,
    KeyChange,
    KeySpec,
    LayerValue,
    Schema,
    TenantInfo,
    TenantState,
    Version,
    WriteResult,
)
from .store import Store
from .sync import SyncStore

__version__ = "0.1.0"

__all__ = [
    "ChangeEvent",
    "Conflict",
    "EmptyChangeSet",
    "Entry",
    "Explanation",
    "HistoryTrimmed",
    "InvalidInput",
    "InvalidName",
    "InvalidSchema",
    "InvalidValue",
    "KeyChange",
    "KeyConflict",
    "KeyNotFound",
    "KeySpec",
    "KvconfError",
    "LayerValue",
    "NotFound",
    "Schema",
    "SchemaProblem",
    "SchemaViolation",
    "Settings",
    "SnapshotCorrupt",
    "SnapshotError",
    "SnapshotNotFound",
    "SnapshotVersionUnsupported",
    "Store",
    "SyncStore",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "TenantState",
    "Unavailable",
    "ValueTooLarge",
    "Version",
    "VersionConflict",
    "VersionNotFound",
    "WriteResult",
    "__version__",
]
