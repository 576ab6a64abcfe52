"""Import and export: tenants and namespaces as JSON, YAML or ``.env`` files.

>>> doc = await export_tenant(store, "acme")                  # every namespace
>>> text = dumps(doc, "json")
>>> data = loads(Path(".env").read_text(), "env", namespace="ai-12", prefix="APP_")
>>> report = await import_values(store, "acme", data)

An import is checked whole against the tenant's schemas before anything is
written, skips keys whose value is already current, and commits one change
set per namespace (:meth:`Store.set_many`). YAML needs PyYAML (optional).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from ._redis.names import validate_key, validate_namespace
from .exceptions import InvalidInput, SchemaProblem, SchemaViolation, TenantNotFound
from .models import KeySpec, Schema
from .schema import check_values, coerce_text, effective_specs
from .store import Store

__all__ = [
    "EXPORT_VERSION",
    "Format",
    "ImportReport",
    "NamespaceImport",
    "detect_format",
    "dumps",
    "export_tenant",
    "import_values",
    "loads",
]

Format = Literal["json", "yaml", "env"]
EXPORT_VERSION = 1
_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]*)\s*=\s*(.*?)\s*$")
_ENV_NAME = re.compile(r"[^A-Za-z0-9_]")


class NamespaceImport(msgspec.Struct, frozen=True):
    """What an import did (or would do) to one namespace."""

    namespace: str
    written: int
    unchanged: int
    revision: int | None = None
    change_sets: int = 0


class ImportReport(msgspec.Struct, frozen=True):
    """The outcome of :func:`import_values`."""

    tenant: str
    dry_run: bool
    namespaces: list[NamespaceImport]


async def export_tenant(
    store: Store, tenant: str, namespace: str | None = None, *, schemas: bool = True
) -> dict[str, Any]:
    """A tenant (or one namespace) as a JSON-ready document, read at one revision."""
    state = await store.read_state(tenant, None if namespace is None else [namespace])
    doc: dict[str, Any] = {
        "kvconf_export": EXPORT_VERSION,
        "tenant": tenant,
        "revision": state.revision,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "namespaces": {
            ns: {k: e.value for k, e in sorted(entries.items())}
            for ns, entries in sorted(state.namespaces.items())
            if entries or namespace is not None
        },
    }
    if schemas:
        found = await store.schemas(tenant)
        if namespace is not None:
            found = {k: v for k, v in found.items() if k == namespace}
        doc["schemas"] = {k: msgspec.to_builtins(v) for k, v in sorted(found.items())}
    return doc


def _env_quote(text: str) -> str:
    if text and re.fullmatch(r"[A-Za-z0-9_./:@,+\-]*", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def dumps(doc: Mapping[str, Any], fmt: Format, *, prefix: str = "") -> str:
    """Render an export document. ``env`` needs exactly one namespace.

    ``.env`` names are ``prefix`` + the key upper-cased, with characters
    that are not allowed in variable names turned into ``_``; strings are
    written as text, other values as JSON.
    """
    if fmt == "json":
        return msgspec.json.format(msgspec.json.encode(doc).decode(), indent=2) + "\n"
    if fmt == "yaml":
        yaml = _yaml()
        return str(yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True))
    spaces = doc["namespaces"]
    if len(spaces) != 1:
        raise InvalidInput(".env export needs one namespace (name it)")
    ((ns, values),) = spaces.items()
    lines = [f"# kvconf export of {doc['tenant']}/{ns} at revision {doc['revision']}"]
    for key, value in values.items():
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        lines.append(f"{prefix}{_ENV_NAME.sub('_', key).upper()}={_env_quote(text)}")
    return "\n".join(lines) + "\n"


def _yaml() -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInput("YAML needs PyYAML: pip install pyyaml (or use JSON)") from None
    return yaml


def detect_format(name: str) -> Format:
    """The format a file name suggests (``.env`` and ``*.env`` are env; default JSON)."""
    low = name.lower()
    if low.endswith((".yaml", ".yml")):
        return "yaml"
    if low.endswith(".env") or low.rsplit("/", 1)[-1].startswith(".env"):
        return "env"
    return "json"


def _parse_env(text: str, prefix: str, keep_case: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise InvalidInput(f".env line {number} is not KEY=VALUE: {line[:60]!r}", line=number)
        name, raw = match.groups()
        if not name.startswith(prefix):
            continue
        name = name[len(prefix) :]
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            quote, raw = raw[0], raw[1:-1]
            if quote == '"':
                raw = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], raw)
        elif " #" in raw:
            raw = raw.split(" #", 1)[0].rstrip()
        out[name if keep_case else name.lower()] = raw
    return out


def loads(
    text: str,
    fmt: Format,
    *,
    namespace: str | None = None,
    prefix: str = "",
    keep_case: bool = False,
) -> dict[str, dict[str, Any]]:
    """Parse a file into ``{namespace: {key: value}}``.

    JSON/YAML: a kvconf export (``{"namespaces": ...}``), or with
    ``namespace`` an object of keys, or without it an object of namespaces.
    ``.env``: needs ``namespace``; keeps only names starting with ``prefix``
    (stripped), lower-cases them unless ``keep_case``; values stay text
    here and are typed by :func:`import_values` from the schema.
    """
    if fmt == "env":
        if namespace is None:
            raise InvalidInput("a .env import needs --namespace")
        return {namespace: dict(_parse_env(text, prefix, keep_case))}
    try:
        data = _yaml().safe_load(text) if fmt == "yaml" else msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"invalid JSON: {exc}") from None
    except InvalidInput:
        raise
    except Exception as exc:  # yaml.YAMLError without importing yaml here
        raise InvalidInput(f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("the document must be an object")
    if "namespaces" in data and "kvconf_export" in data:
        spaces = data["namespaces"]
        if namespace is not None:
            if len(spaces) != 1:
                raise InvalidInput("--namespace needs an export of exactly one namespace")
            spaces = {namespace: next(iter(spaces.values()))}
    elif namespace is not None:
        spaces = {namespace: data}
    else:
        spaces = data
    if not isinstance(spaces, dict) or not all(isinstance(v, dict) for v in spaces.values()):
        raise InvalidInput("expected an object of namespaces, each an object of keys")
    return {validate_namespace(ns): dict(values) for ns, values in spaces.items()}


def _typed(
    spaces: Mapping[str, Mapping[str, Any]], schemas: Mapping[str, Schema], texts: bool
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    problems: list[SchemaProblem] = []
    for ns, values in spaces.items():
        specs: dict[str, KeySpec] = effective_specs(schemas, ns)
        typed: dict[str, Any] = {}
        for key, value in values.items():
            validate_key(key)
            if texts and isinstance(value, str):
                try:
                    value = coerce_text(value, specs.get(key))
                except ValueError as exc:
                    raise InvalidInput(f"{ns}/{key}: {exc}", namespace=ns, key=key) from None
            typed[key] = value
        try:
            check_values(specs, typed)
        except SchemaViolation as exc:
            problems.extend(msgspec.structs.replace(p, key=f"{ns}/{p.key}") for p in exc.problems)
        out[ns] = typed
    if problems:
        raise SchemaViolation(problems)
    return out


async def import_values(
    store: Store,
    tenant: str,
    spaces: Mapping[str, Mapping[str, Any]],
    *,
    texts: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    reason: str = "",
    progress: Callable[[int, int, str], None] | None = None,
) -> ImportReport:
    """Write ``{namespace: {key: value}}`` into ``tenant``, one change set per namespace.

    Every value is checked against the schema first; one violation anywhere
    refuses the whole import before anything is written. ``texts`` types
    string values from the schema (``.env`` input). Keys whose value is
    already current are skipped; a namespace larger than the store's
    ``max_keys_per_write`` is committed in several change sets.
    """
    try:
        schemas = await store.schemas(tenant)
        current = (await store.read_state(tenant, list(spaces))).namespaces
    except TenantNotFound:
        schemas, current = {}, {}
    typed = _typed(spaces, schemas, texts)
    reason = reason or "import"
    limit = store.settings.max_keys_per_write
    rows: list[NamespaceImport] = []
    for i, (ns, values) in enumerate(typed.items()):
        have = current.get(ns, {})
        changed = {k: v for k, v in values.items() if k not in have or have[k].value != v}
        revision, sets = None, 0
        items = list(changed.items())
        for at in range(0, len(items), limit):
            chunk = dict(items[at : at + limit])
            if dry_run:  # the write's own checks: a dry run refuses what the import would
                await store.check(tenant, ns, chunk)
                continue
            result = await store.set_many(tenant, ns, chunk, actor=actor, reason=reason)
            revision, sets = result.revision, sets + 1
        rows.append(NamespaceImport(namespace=ns, written=len(changed),
                                    unchanged=len(values) - len(changed), revision=revision,
                                    change_sets=sets))  # fmt: skip
        if progress is not None:
            progress(i + 1, len(typed), ns)
    return ImportReport(tenant=tenant, dry_run=dry_run, namespaces=rows)
