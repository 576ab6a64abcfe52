"""kvconf: a multi-tenant, versioned configuration store on Redis with hot reload.

The public names are re-exported here; everything in an underscore module is
internal. See the README for a tour.
"""

from ._http import store as _http_store  # noqa: F401  (registers http(s):// URLs for Store(url))
from ._watch.fleet import FleetMember, fleet
from .config import Settings
from .exceptions import (
    Conflict,
    EmptyChangeSet,
    Forbidden,
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
    Unauthorized,
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
from .watcher import Binding, Change, Resync, SyncWatcher, ValueChange, Watcher

__version__ = "0.1.0"

__all__ = [
    "Binding",
    "Change",
    "ChangeEvent",
    "Conflict",
    "EmptyChangeSet",
    "Entry",
    "Explanation",
    "FleetMember",
    "Forbidden",
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
    "Resync",
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
    "SyncWatcher",
    "TenantExists",
    "TenantInfo",
    "TenantNotFound",
    "TenantState",
    "Unauthorized",
    "Unavailable",
    "ValueChange",
    "ValueTooLarge",
    "Version",
    "VersionConflict",
    "VersionNotFound",
    "Watcher",
    "WriteResult",
    "__version__",
    "fleet",
]
