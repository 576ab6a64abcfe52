"""Typed schemas: checking values against key specs. Pure, no I/O.

A namespace's effective schema merges, per key, the namespace's own spec over
the tenant's (the schema set on ``_defaults``).

>>> spec = KeySpec(type="int", min=1, max=600)
>>> check_value("stale_timeout", 30, spec)
[]
>>> [p.rule for p in check_value("stale_timeout", 0, spec)]
['min']
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from ._codec import MAX_DEPTH, check_json, too_deep
from ._redis.names import DEFAULTS_NAMESPACE, validate_key
from .exceptions import InvalidName, InvalidSchema, InvalidValue, SchemaProblem, SchemaViolation
from .models import KeySpec, Schema

__all__ = [
    "MASK",
    "check_value",
    "check_values",
    "coerce_text",
    "decode_schema_document",
    "effective_specs",
    "mask_value",
    "masked_schema",
    "validate_schema",
]

#: What a sensitive value reads as for callers without the secrets right.
MASK = "***"

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "json":
        return True
    if kind != "bool" and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[kind])


def check_value(key: str, value: Any, spec: KeySpec) -> list[SchemaProblem]:
    """Every rule of ``spec`` that ``value`` breaks (empty list: valid).

    A problem describes the rule, never the value: problems reach error
    bodies, logs and callers who may not read the key (sensitive or not).
    """
    if not _type_ok(value, spec.type):
        found = type(value).__name__ if value is not None else "null"
        return [SchemaProblem(key, "type", f"expected {spec.type}, got {found}")]
    problems: list[SchemaProblem] = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.min is not None and value < spec.min:
            problems.append(SchemaProblem(key, "min", f"below the minimum {spec.min:g}"))
        if spec.max is not None and value > spec.max:
            problems.append(SchemaProblem(key, "max", f"above the maximum {spec.max:g}"))
    if (
        spec.max_length is not None
        and isinstance(value, str | list | dict)
        and len(value) > spec.max_length
    ):
        problems.append(
            SchemaProblem(key, "max_length", f"longer than the limit {spec.max_length}")
        )
    if spec.choices is not None and value not in spec.choices:
        problems.append(SchemaProblem(key, "choices", "not one of the allowed choices"))
    return problems


def effective_specs(schemas: Mapping[str, Schema], namespace: str) -> dict[str, KeySpec]:
    """Per-key specs for ``namespace``: its own over the tenant's ``_defaults``.

    ``sensitive`` does not follow the override: a key is sensitive in a
    namespace when its own schema or ``_defaults`` says so (its value may come
    from either layer), and in ``_defaults`` when any schema of the tenant says
    so (that value shows through every namespace).
    """
    merged: dict[str, KeySpec] = {}
    base = schemas.get(DEFAULTS_NAMESPACE)
    if base is not None:
        merged.update(base.keys)
    if namespace == DEFAULTS_NAMESPACE:
        for ns, schema in schemas.items():
            if ns == DEFAULTS_NAMESPACE:
                continue
            for key, spec in schema.keys.items():
                if spec.sensitive and not (key in merged and merged[key].sensitive):
                    found = merged.get(key)
                    merged[key] = (
                        _SENSITIVE_ONLY
                        if found is None
                        else msgspec.structs.replace(found, sensitive=True)
                    )
        return merged
    own = schemas.get(namespace)
    if own is not None:
        for key, spec in own.keys.items():
            under = merged.get(key)
            if under is not None and under.sensitive and not spec.sensitive:
                spec = msgspec.structs.replace(spec, sensitive=True)
            merged[key] = spec
    return merged


#: The spec of a ``_defaults`` key that only another namespace's schema
#: declares (sensitive there): it masks, and otherwise counts as no spec.
_SENSITIVE_ONLY = KeySpec(sensitive=True)


def check_values(specs: Mapping[str, KeySpec], values: Mapping[str, Any]) -> None:
    """Raise one :class:`SchemaViolation` listing every problem in ``values``."""
    if not specs:
        return
    problems: list[SchemaProblem] = []
    for key, value in values.items():
        spec = specs.get(key)
        if spec is not None:
            problems.extend(check_value(key, value, spec))
    if problems:
        raise SchemaViolation(problems)


_CATEGORY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")


def validate_schema(schema: Schema) -> Schema:
    """Refuse a self-contradictory schema (raises :class:`InvalidSchema`)."""
    problems: list[str] = []
    for key, spec in schema.keys.items():
        try:
            validate_key(key)
        except InvalidName as exc:
            problems.append(exc.message)
            continue
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            problems.append(f"{key}: min {spec.min} is above max {spec.max}")
        if spec.max_length is not None and spec.max_length < 0:
            problems.append(f"{key}: max_length must not be negative")
        try:
            for choice in spec.choices or []:
                check_json(key, choice)
            if spec.default is not msgspec.UNSET:
                check_json(key, spec.default)
        except InvalidValue as exc:
            problems.append(f"{key}: {exc.details['reason']}")
            continue
        if spec.category is not None and not _CATEGORY.fullmatch(spec.category):
            problems.append(f"{key}: category must be 1-64 characters of A-Z a-z 0-9 _ . -")
        for choice in spec.choices or []:
            problems.extend(
                f"{key}: choice {p.message}"
                for p in check_value(key, choice, spec)
                if p.rule == "type"
            )
        if spec.default is not msgspec.UNSET:
            problems.extend(
                f"{key}: default {p.message}" for p in check_value(key, spec.default, spec)
            )
    if problems:
        raise InvalidSchema("invalid schema: " + "; ".join(problems), problems=problems)
    return schema


def decode_schema_document(data: bytes | str | Mapping[str, Any]) -> Schema:
    """A :class:`Schema` from JSON text or a mapping, validated."""
    try:
        if isinstance(data, bytes | str):
            schema = msgspec.json.decode(data, type=Schema)
        else:
            schema = msgspec.convert(data, Schema)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise InvalidSchema(f"invalid schema: {exc}", problems=[str(exc)]) from exc
    except RecursionError:
        where = too_deep(data) if isinstance(data, bytes | str) else None
        text = f"{where or 'document'}: nested deeper than {MAX_DEPTH} levels"
        raise InvalidSchema(f"invalid schema: {text}", problems=[text], field=where) from None
    return validate_schema(schema)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_text(text: str, spec: KeySpec | None) -> Any:
    """A value from text (an environment variable, a CLI argument, a form field).

    With a spec the text is converted to its type (``"25"`` → 25 for ``int``);
    without one, JSON is tried and plain text is the fallback. Raises
    ``ValueError`` when the text cannot be the spec's type.
    """
    if spec is _SENSITIVE_ONLY:
        spec = None
    kind = spec.type if spec is not None else None
    if kind == "str":
        return text
    # The messages name the rule, never the text: it may be a secret.
    if kind == "int":
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError("not an integer") from None
    if kind == "float":
        try:
            return float(text.strip())
        except ValueError:
            raise ValueError("not a number") from None
    if kind == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("not a boolean (true/false, yes/no, on/off, 1/0)")
    try:
        return msgspec.json.decode(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    except msgspec.DecodeError:
        if kind == "json":
            raise ValueError("not JSON") from None
        return text


def masked_schema(schema: Schema, schemas: Mapping[str, Schema], namespace: str) -> dict[str, Any]:
    """``schema`` (of ``namespace``) as JSON with sensitive keys' defaults and choices masked.

    A key is sensitive as :func:`effective_specs` says, over the tenant's
    ``schemas`` with ``schema`` in place for ``namespace``.
    """
    merged = effective_specs({**schemas, namespace: schema}, namespace)
    doc: dict[str, Any] = msgspec.to_builtins(schema)
    for key, spec_doc in doc.get("keys", {}).items():
        spec = merged.get(key)
        if spec is None or not spec.sensitive:
            continue
        if "default" in spec_doc:
            spec_doc["default"] = MASK
        if spec_doc.get("choices") is not None:
            spec_doc["choices"] = [MASK for _ in spec_doc["choices"]]
    return doc


def mask_value(value: Any, spec: KeySpec | None) -> Any:
    """``MASK`` for sensitive keys, the value otherwise."""
    return MASK if spec is not None and spec.sensitive else value
