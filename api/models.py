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
    "KeyRollback",
    "KeyWrite",
    "Right",
    "SchemaBody",
    "TenantCreate",
    "TenantRollback",
    "TokenCreate",
    "body_doc",
    "decode",
    "respond",
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
