"""Request bodies of the REST API, as msgspec Structs, and their OpenAPI.

FastAPI cannot use msgspec Structs as body or response models, so the API
decodes raw bodies with msgspec (:func:`decode`) and answers with
msgspec-encoded responses (:func:`respond`); :func:`body_doc` describes a body
in OpenAPI from msgspec's own JSON Schema, collected in :data:`COMPONENTS` and
merged into the app's schema once.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from starlette.responses import Response

from kvconf.exceptions import InvalidInput

__all__ = [
    "COMPONENTS",
    "ChangeSet",
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
    "TenantCreate",
    "TenantRollback",
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
    """A new API token: its name and its rights per tenant (``*``: every tenant)."""

    name: str
    grants: dict[str, list[Right]]


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
    tp: Any, status: int = 200, *, errors: Any = Error
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` describing a JSON response of type ``tp`` and the error shape."""
    (ok, bad), components = msgspec.json.schema_components([tp, errors], ref_template=_REF)
    COMPONENTS.update(components)
    return {
        status: {"description": "OK", "content": {"application/json": {"schema": ok}}},
        "4XX": {"description": "Refused", "content": {"application/json": {"schema": bad}}},
        "503": {"description": "Redis unavailable",
                "content": {"application/json": {"schema": bad}}},
    }  # fmt: skip


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
