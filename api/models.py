"""Request bodies of the REST API, as msgspec Structs, and their OpenAPI.

FastAPI cannot use msgspec Structs as body or response models, so the API
decodes raw bodies with msgspec (:func:`decode`) and answers with
msgspec-encoded responses (:func:`respond`); :func:`body_doc` describes a body
in OpenAPI from msgspec's own JSON Schema, collected in :data:`COMPONENTS` and
merged into the app's schema once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from starlette.responses import Response

from kvconf._codec import MAX_DEPTH, too_deep
from kvconf.exceptions import InvalidInput, InvalidValue
from kvconf.models import ChangeEvent
from kvconf.tenants import TenantStatus
from kvconf.timeline import KeyDiff

__all__ = [
    "COMPONENTS",
    "ChangeSet",
    "ChangeSetAcross",
    "ChangesPreview",
    "CloudConfig",
    "CloudError",
    "CloudKey",
    "CloudKeyUpdated",
    "CloudUpdated",
    "CloudValue",
    "EntryDoc",
    "Error",
    "ErrorBody",
    "KeyRollback",
    "KeyWrite",
    "Right",
    "SchemaBody",
    "StateEntry",
    "TenantCreate",
    "TenantRollback",
    "TenantStateDoc",
    "TokenCreate",
    "Written",
    "body_doc",
    "decode",
    "respond",
    "response_doc",
]

Right = Literal["read", "write", "admin", "secrets"]


class KeyWrite(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``PUT .../keys/{key}``: the new value (any JSON) and why."""

    value: Any
    reason: str = ""


class ChangeSet(msgspec.Struct, forbid_unknown_fields=True):
    """An atomic multi-key write of one namespace.

    ``expect`` maps keys of the change set to the version each must have
    (0: must not exist); any mismatch writes nothing (409).
    """

    values: dict[str, Any] = {}
    deletes: list[str] = []
    expect: dict[str, int] = {}
    reason: str = ""


class ChangeSetAcross(msgspec.Struct, forbid_unknown_fields=True):
    """An atomic change set spanning namespaces of one tenant: one revision, all or nothing.

    ``values``, ``deletes`` and ``expect`` are keyed by namespace; ``expect``
    maps keys to the version each must have (0: must not exist, -1: exists at any version);
    any mismatch writes nothing (409, conflicts naming keys
    ``namespace/key``). ``create`` false refuses to create a missing tenant.
    """

    values: dict[str, dict[str, Any]] = {}
    deletes: dict[str, list[str]] = {}
    expect: dict[str, dict[str, int]] = {}
    reason: str = ""
    create: bool = True


class KeyRollback(msgspec.Struct, forbid_unknown_fields=True):
    """Make an old version of a key current again, as a new version."""

    to_version: int
    expect_version: int | None = None
    reason: str = ""


class TenantRollback(msgspec.Struct, forbid_unknown_fields=True):
    """Bring a namespace (or the whole tenant) back to its state at a revision."""

    to_revision: int
    namespace: str | None = None
    reason: str = ""


class TenantCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Create a tenant: empty, from a ``template`` tenant, or as a clone.

    A template copies the source's schemas and ``_defaults``; a clone copies
    schemas and every namespace. ``overrides`` (namespace → key → value) are
    applied on top.
    """

    name: str
    template: str | None = None
    clone_from: str | None = None
    overrides: dict[str, dict[str, Any]] = {}
    reason: str = ""


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new API token: its name, its rights per scope, and its lifetime.

    A scope is ``*`` (every tenant), a tenant (``acme``), or namespaces of a
    tenant (``acme/ai-12``, or a prefix ``acme/ai-*``). ``expires_in``: seconds
    until the token stops working (default: never; never later than the
    creator's own token).
    """

    name: str
    grants: dict[str, list[Right]]
    expires_in: Annotated[int, msgspec.Meta(gt=0)] | None = None


class SchemaBody(msgspec.Struct, forbid_unknown_fields=True):
    """Wrapper used only to document schema documents in OpenAPI."""

    keys: dict[str, Any] = {}
    description: str = ""


class ErrorBody(msgspec.Struct):
    """An error: a stable ``code``, a sentence, and structured details."""

    code: str
    message: str


class Error(msgspec.Struct):
    """Every error response outside the CloudBrain routes."""

    error: ErrorBody


class CloudError(msgspec.Struct, omit_defaults=True):
    """Every error response of the CloudBrain routes.

    ``problems`` (schema violations only) lists every broken key at once:
    ``{"key", "rule", "message"}`` each.
    """

    success: bool
    error: str
    problems: list[dict[str, str]] | None = None


class EntryDoc(msgspec.Struct):
    """One key's current value and metadata (``ETag`` header: its version)."""

    key: str
    value: Any
    version: int
    revision: int
    updated_at: str
    updated_by: str


class Written(msgspec.Struct):
    """A committed write: the tenant revision and each key's new version."""

    revision: int
    epoch: str
    versions: dict[str, int]


class CloudValue(msgspec.Struct):
    """One key in ``GET /api/v1/config/{ai_id}``."""

    value: str
    updated_at: str


class CloudConfig(msgspec.Struct):
    """``GET /api/v1/config/{ai_id}``."""

    success: bool
    ai_id: int
    configuration: dict[str, CloudValue]


class CloudUpdated(msgspec.Struct):
    """``PUT /api/v1/config/{ai_id}``."""

    success: bool
    ai_id: int
    updated_keys: list[str]
    message: str


class CloudKey(msgspec.Struct):
    """``GET /api/v1/config/{ai_id}/{key}``."""

    success: bool
    ai_id: int
    config_key: str
    config_value: str
    updated_at: str


class CloudKeyUpdated(msgspec.Struct):
    """``PUT /api/v1/config/{ai_id}/{key}``."""

    success: bool
    ai_id: int
    config_key: str
    config_value: str
    message: str


class Status(msgspec.Struct):
    """``/healthz`` and ``/readyz``."""

    status: Literal["ok", "ready"]


class NamespaceList(msgspec.Struct):
    """Namespaces of a tenant."""

    tenant: str
    namespaces: list[str]


class StateEntry(msgspec.Struct):
    """One key in a tenant state: value (masked without ``secrets``) and metadata."""

    value: Any
    version: int
    revision: int
    updated_at: str
    updated_by: str


class TenantStateDoc(msgspec.Struct):
    """A tenant's state at one revision: what an HTTP watcher lists before it follows
    the watch stream from ``revision``."""

    tenant: str
    epoch: str
    revision: int
    namespaces: dict[str, dict[str, StateEntry]]
    schemas: dict[str, Any]


class NamespaceDoc(msgspec.Struct):
    """Every key of a namespace at one revision."""

    tenant: str
    namespace: str
    revision: int
    keys: dict[str, EntryDoc]


class KeyPreview(msgspec.Struct):
    """What a dry run would do to one key (values masked without the secrets right)."""

    key: str
    change: Literal["added", "changed", "unchanged", "removed"]
    old: Any
    old_version: int
    new: Any


class VersionConflictDoc(msgspec.Struct):
    """A key whose version is not the one expected."""

    key: str
    expected: int
    actual: int


class Preview(msgspec.Struct):
    """``?dry_run=true``: validated, nothing committed."""

    dry_run: bool
    tenant: str
    namespace: str
    revision: int
    would_commit: bool
    conflicts: list[VersionConflictDoc]
    changes: list[KeyPreview]


class ChangesPreview(msgspec.Struct):
    """``?dry_run=true`` on a change set across namespaces: each namespace's diff, all
    read at ``revision``."""

    dry_run: bool
    tenant: str
    revision: int
    would_commit: bool
    namespaces: list[Preview]


class RollbackPreview(msgspec.Struct):
    """``?dry_run=true`` on a namespace or tenant rollback: each namespace's diff."""

    dry_run: bool
    tenant: str
    to_revision: int
    would_commit: bool
    namespaces: list[Preview]


class SchemaPreview(msgspec.Struct):
    """``?dry_run=true`` on a schema write: it would be accepted (else a 422)."""

    dry_run: bool
    would_commit: bool
    schema: dict[str, Any] | None = None


class TenantDeletePreview(msgspec.Struct):
    """``?dry_run=true`` on a tenant delete: what would go."""

    dry_run: bool
    would_commit: bool
    tenant: str
    deleted: Literal["soft", "hard"]
    revision: int
    namespaces: list[str]


class TenantUndeletePreview(msgspec.Struct):
    """``?dry_run=true`` on an undelete: false when the tenant is not deleted."""

    dry_run: bool
    would_commit: bool
    tenant: str


class EffectiveValues(msgspec.Struct):
    """Effective values of a namespace (``explain=false``)."""

    tenant: str
    namespace: str
    values: dict[str, Any]


class ShadowDoc(msgspec.Struct):
    """A layer's value that the winning layer hides."""

    layer: str
    value: Any


class ExplainedDoc(msgspec.Struct):
    """An effective value, the layer it came from and what it shadows."""

    value: Any
    layer: str
    shadowed: list[ShadowDoc]


class EffectiveExplained(msgspec.Struct):
    """Effective values with their layers (``explain=true``)."""

    tenant: str
    namespace: str
    keys: dict[str, ExplainedDoc]


class VersionDoc(msgspec.Struct):
    """One version of a key (a delete is a version too)."""

    version: int
    revision: int
    value: Any
    deleted: bool
    updated_at: str
    updated_by: str
    reason: str


class KeyHistory(msgspec.Struct):
    """Versions of a key, newest first; ``next_before`` pages on."""

    key: str
    versions: list[VersionDoc]
    next_before: int | None


class KeyRolledBack(msgspec.Struct):
    """A key rollback's commit."""

    revision: int
    epoch: str
    versions: dict[str, int]


class ChangeLog(msgspec.Struct):
    """Change events after ``since``, oldest first; ``next_since`` pages on (null: the end)."""

    tenant: str
    since: int
    events: list[ChangeEvent]
    next_since: int | None


class DiffDoc(msgspec.Struct):
    """Keys that differ between two revisions."""

    tenant: str
    namespace: str | None
    from_revision: int
    to_revision: int
    changes: list[KeyDiff]


class CommitDoc(msgspec.Struct):
    """One commit of a tenant rollback."""

    namespace: str
    revision: int
    versions: dict[str, int]
    epoch: str = ""


class TenantRolledBack(msgspec.Struct):
    """A tenant (or namespace) rollback: one commit per namespace touched."""

    tenant: str
    to_revision: int
    commits: list[CommitDoc]


class TenantList(msgspec.Struct, omit_defaults=True):
    """Tenants the caller can see (``deleted``: soft-deleted ones, with ``include_deleted``).

    With ``include_deleted``, ``states`` gives each one's state and times.
    """

    tenants: list[str]
    deleted: list[str] = []
    states: list[TenantStatus] = []


class TenantCreated(msgspec.Struct):
    """A new tenant and its revision."""

    tenant: str
    revision: int


class SnapshotRef(msgspec.Struct):
    """The snapshot saved before a hard delete."""

    path: str
    created_at: str


class TenantDeleted(msgspec.Struct):
    """A deleted tenant (``snapshot``: saved first, for hard deletes)."""

    tenant: str
    deleted: Literal["soft", "hard"]
    snapshot: SnapshotRef | None


class TenantUndeleted(msgspec.Struct):
    """A tenant brought back."""

    tenant: str
    deleted: bool


class Schemas(msgspec.Struct):
    """Every schema of a tenant by namespace."""

    tenant: str
    schemas: dict[str, SchemaBody]


class SchemaSet(msgspec.Struct):
    """A replaced schema and the revision that recorded it."""

    revision: int
    schema: SchemaBody


class Revision(msgspec.Struct):
    """The revision that recorded a change."""

    revision: int


class FleetMemberDoc(msgspec.Struct):
    """A watcher instance's last report (Unix times)."""

    instance: str
    host: str
    pid: int
    revision: int
    epoch: str
    stale: bool
    reported_at: float
    started_at: float = 0.0


class Fleet(msgspec.Struct):
    """Watcher instances of a tenant that reported recently."""

    tenant: str
    watchers: list[FleetMemberDoc]


class SnapshotTenant(msgspec.Struct):
    """This tenant's part of a snapshot file (``log``: change-log records kept)."""

    tenant: str
    revision: int
    epoch: str
    namespaces: int
    keys: int
    versions: int
    log: int
    deleted: bool = False


class SnapshotDoc(msgspec.Struct):
    """A snapshot file that holds the tenant: its format version and size.

    ``size`` is the whole file's, in bytes, or null when the file holds other
    tenants too (how much they hold is theirs to know).
    """

    name: str
    created_at: str
    label: str
    tenant: SnapshotTenant
    format: int
    size: int | None


class SnapshotSaved(msgspec.Struct):
    """A snapshot just saved."""

    name: str
    created_at: str
    label: str
    tenant: SnapshotTenant
    format: int
    size: int


class SnapshotVerified(msgspec.Struct):
    """A snapshot file checked whole: format, checksum, every record."""

    name: str
    created_at: str
    label: str
    tenant: SnapshotTenant
    format: int
    size: int | None
    verified: bool


class SnapshotList(msgspec.Struct):
    """Snapshots that hold the tenant, newest last."""

    tenant: str
    snapshots: list[SnapshotDoc]


class RestoredTenant(msgspec.Struct):
    """What a restore did (or would do) to a tenant."""

    tenant: str
    source: str
    mode: Literal["replace", "merge"]
    live_revision: int
    file_revision: int
    revision: int


class Restored(msgspec.Struct):
    """A restore's report."""

    tenant: str
    dry_run: bool
    restored: list[RestoredTenant]


class WhoAmI(msgspec.Struct):
    """The caller's identity and rights."""

    name: str
    grants: dict[str, list[str]]
    open: bool
    expires_at: str | None = None


class TokenCreated(msgspec.Struct):
    """A new token: its text is shown this once."""

    name: str
    token: str
    grants: dict[str, list[Right]]
    expires_at: str | None = None


class TokenDoc(msgspec.Struct):
    """A stored token (never its text)."""

    name: str
    grants: dict[str, list[str]]
    created_at: str = ""
    created_by: str = ""
    expires_at: str | None = None
    last_used_at: str | None = None


class TokenList(msgspec.Struct):
    """Tokens visible to the caller."""

    tokens: list[TokenDoc]


class TokenRevoked(msgspec.Struct):
    """A revoked token."""

    name: str
    revoked: bool


#: OpenAPI components generated from msgspec types (merged into the app schema).
COMPONENTS: dict[str, Any] = {}
_REF = "#/components/schemas/{name}"


def body_doc(tp: Any, *, required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON request body of type ``tp``."""
    (schema,), components = msgspec.json.schema_components([tp], ref_template=_REF)
    COMPONENTS.update(components)
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def response_doc(
    tp: Any, status: int = 200, *, also: tuple[int, ...] = (), errors: Any = Error
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` describing a JSON response of type ``tp`` (for ``status`` and ``also``).

    ``tp`` may be a tuple of types: the response is any one of them.

    Error responses are added to every operation by :func:`api.openapi.build_openapi`
    (``errors`` is the body they use, registered here).
    """
    types = list(tp) if isinstance(tp, tuple) else [tp]
    schemas, components = msgspec.json.schema_components([*types, errors], ref_template=_REF)
    COMPONENTS.update(components)
    oks = list(schemas[:-1])
    # Untagged Struct unions are not msgspec types: several types are any-of.
    ok = oks[0] if len(oks) == 1 else {"anyOf": oks}
    doc: dict[int | str, dict[str, Any]] = {}
    for code in (status, *also):
        description = "Created" if code == 201 else "OK"
        doc[code] = {"description": description, "content": {"application/json": {"schema": ok}}}
    return doc


_encoder = msgspec.json.Encoder()


def respond(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded by msgspec (Structs, datetimes and all)."""
    return Response(
        _encoder.encode(obj), status_code=status, media_type="application/json", headers=headers
    )


def decode(body: bytes, tp: type[Any]) -> Any:
    """Decode a request body as ``tp``; a 422 naming the field when it does not fit."""
    if not body:
        raise InvalidInput("a JSON request body is required", field="body")
    try:
        return msgspec.json.decode(body, type=tp)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `$.", 1)[1].rstrip("`") if "at `$." in text else "body"
        raise InvalidInput(f"invalid request body: {text}", field=field) from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}", field="body") from None
    except RecursionError:
        raise too_deep_error(body) from None


def too_deep_error(body: bytes) -> InvalidInput:
    """The 422 for a body nested deeper than the decoder can follow, naming the field."""
    field = too_deep(body) or "body"
    exc = InvalidValue(field, f"nested deeper than {MAX_DEPTH} levels")
    exc.details["field"] = field
    return exc
