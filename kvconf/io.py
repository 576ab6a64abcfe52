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

import io
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from dotenv.parser import parse_stream

from . import _codec
from ._codec import same_value
from ._redis.names import (
    DEFAULTS_NAMESPACE,
    TENANTS_KEY,
    TenantKeys,
    hist_member_prefix,
    validate_key,
    validate_namespace,
    validate_tenant,
)
from ._store.ops import MAX_VERSION
from .exceptions import (
    Conflict,
    InvalidInput,
    SchemaProblem,
    SchemaViolation,
    TenantNotFound,
)
from .models import KeySpec, Schema, Version
from .schema import check_values, coerce_text, effective_specs, validate_schema
from .store import Store

__all__ = [
    "EXPORT_VERSION",
    "Format",
    "HistoryImport",
    "ImportDocument",
    "ImportReport",
    "NamespaceImport",
    "detect_format",
    "dumps",
    "export_tenant",
    "import_history",
    "import_values",
    "load_document",
    "loads",
]

Format = Literal["json", "yaml", "env"]
EXPORT_VERSION = 1
_ENV_NAME = re.compile(r"[^A-Za-z0-9_]")


class NamespaceImport(msgspec.Struct, frozen=True):
    """What an import did (or would do) to one namespace.

    ``diff`` names each key the import writes or deletes: ``added``,
    ``changed`` or ``removed`` (``removed`` only with ``strict``).
    """

    namespace: str
    written: int
    unchanged: int
    revision: int | None = None
    change_sets: int = 0
    deleted: int = 0
    diff: dict[str, Literal["added", "changed", "removed"]] = {}


class ImportReport(msgspec.Struct, frozen=True):
    """The outcome of :func:`import_values`."""

    tenant: str
    dry_run: bool
    namespaces: list[NamespaceImport]
    #: Namespaces whose schema the import set (or would set).
    schemas: list[str] = []


async def export_tenant(
    store: Store,
    tenant: str,
    namespace: str | None = None,
    *,
    schemas: bool = True,
    history: bool = False,
) -> dict[str, Any]:
    """A tenant (or one namespace) as a JSON-ready document, read at one revision.

    ``schemas`` (default) carries every schema, ``sensitive`` flags included,
    so an import keeps secrets masked. ``history`` adds each exported key's
    kept versions, oldest first (version, revision, timestamps, updated_by,
    reason, value), for :func:`import_history`.
    """
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
    if history:
        kept: dict[str, dict[str, list[Any]]] = {}
        for ns, keys in doc["namespaces"].items():
            kept[ns] = {}
            for key in keys:
                versions = await store.history(
                    tenant, ns, key, limit=max(store.settings.history_limit, 1)
                )
                # versions written after the state was read are not part of it
                at = [v for v in reversed(versions) if v.revision <= state.revision]
                kept[ns][key] = msgspec.to_builtins(at)
        doc["history"] = kept
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
    """``KEY=VALUE`` lines as python-dotenv reads them: quotes, escapes, multi-line
    quoted values, ``export`` and comments; no ``${VAR}`` expansion (a config
    file imports what it says, never the importing shell's environment)."""
    out: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # the line itself may hold a secret: its number is enough
            number = binding.original.line
            raise InvalidInput(f".env line {number} is not KEY=VALUE", line=number)
        name, value = binding.key, binding.value
        if name is None or not name.startswith(prefix):
            continue
        name = name[len(prefix) :]
        out[name if keep_case else name.lower()] = value if value is not None else ""
    return out


class ImportDocument(msgspec.Struct, frozen=True):
    """A parsed import file: values by namespace, and from a kvconf export its
    schemas and (``--include-history``) each key's versions."""

    namespaces: dict[str, dict[str, Any]]
    schemas: dict[str, Schema] = {}
    history: dict[str, dict[str, list[Version]]] = {}
    revision: int = 0


def load_document(
    text: str,
    fmt: Format,
    *,
    namespace: str | None = None,
    prefix: str = "",
    keep_case: bool = False,
) -> ImportDocument:
    """Parse a file like :func:`loads`, keeping an export's schemas and history."""
    spaces = loads(text, fmt, namespace=namespace, prefix=prefix, keep_case=keep_case)
    if fmt == "env":
        return ImportDocument(namespaces=spaces)
    data = _yaml().safe_load(text) if fmt == "yaml" else msgspec.json.decode(text)
    if not ("namespaces" in data and "kvconf_export" in data):
        return ImportDocument(namespaces=spaces)
    renamed = dict(zip(data["namespaces"], spaces, strict=True))  # --namespace renames one
    try:
        schemas = msgspec.convert(data.get("schemas") or {}, dict[str, Schema])
        history = msgspec.convert(
            data.get("history") or {}, dict[str, dict[str, list[Version]]], strict=False
        )
        revision = int(data.get("revision") or 0)
    except (msgspec.ValidationError, TypeError, ValueError) as exc:
        raise InvalidInput(f"invalid export document: {exc}") from None
    for ns, schema in schemas.items():
        validate_namespace(ns)
        validate_schema(schema)
    return ImportDocument(
        namespaces=spaces,
        schemas={renamed.get(ns, ns): sch for ns, sch in schemas.items()
                 if ns in renamed or namespace is None},
        history={renamed[ns]: h for ns, h in history.items() if ns in renamed},
        revision=revision,
    )  # fmt: skip


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
    except RecursionError:
        raise InvalidInput(
            f"invalid document: nested deeper than {_codec.MAX_DEPTH} levels",
            field=_codec.too_deep(text) or "document",
        ) from None
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


#: Marks a key a strict import deletes.
_DELETE = object()


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
    schemas: Mapping[str, Schema] | None = None,
    strict: bool = False,
) -> ImportReport:
    """Write ``{namespace: {key: value}}`` into ``tenant``, one change set per namespace.

    ``strict`` makes each namespace of the file match it: keys the namespace
    has and the file lacks are deleted in the same change set.

    ``schemas`` (from an export) replace the tenant's schemas of those
    namespaces first, so sensitive keys are masked before any value lands.
    Every value is checked against the resulting schemas first; one
    violation anywhere refuses the whole import before anything is written.
    ``texts`` types string values from the schema (``.env`` input). Keys
    whose value is already current are skipped; a namespace larger than the
    store's ``max_keys_per_write`` is committed in several change sets.
    """
    try:
        have_schemas = await store.schemas(tenant)
        current = (await store.read_state(tenant, list(spaces))).namespaces
    except TenantNotFound:
        have_schemas, current = {}, {}
    new_schemas = {ns: s for ns, s in (schemas or {}).items() if have_schemas.get(ns) != s}
    typed = _typed(spaces, {**have_schemas, **new_schemas}, texts)
    reason = reason or "import"
    if new_schemas and not dry_run:
        for ns in sorted(new_schemas, key=lambda n: n != DEFAULTS_NAMESPACE):
            await store.set_schema(tenant, ns, new_schemas[ns], actor=actor, reason=reason)
    limit = store.settings.max_keys_per_write
    rows: list[NamespaceImport] = []
    for i, (ns, values) in enumerate(typed.items()):
        have = current.get(ns, {})
        changed = {
            k: v for k, v in values.items() if k not in have or not same_value(have[k].value, v)
        }
        gone = sorted(k for k in have if k not in values) if strict else []
        diff: dict[str, Literal["added", "changed", "removed"]] = {
            k: "changed" if k in have else "added" for k in changed
        }
        diff.update(dict.fromkeys(gone, "removed"))
        revision, sets = None, 0
        ops: list[tuple[str, Any]] = [*changed.items(), *((k, _DELETE) for k in gone)]
        for at in range(0, len(ops), limit):
            chunk = {k: v for k, v in ops[at : at + limit] if v is not _DELETE}
            deletes = [k for k, v in ops[at : at + limit] if v is _DELETE]
            if dry_run:  # the write's own checks: a dry run refuses what the import would
                await store.check(tenant, ns, chunk, deletes=deletes)
                continue
            result = await store.commit(
                tenant, ns, chunk, deletes=deletes, actor=actor, reason=reason
            )
            revision, sets = result.revision, sets + 1
        rows.append(NamespaceImport(namespace=ns, written=len(changed),
                                    unchanged=len(values) - len(changed), revision=revision,
                                    change_sets=sets, deleted=len(gone),
                                    diff=dict(sorted(diff.items()))))  # fmt: skip
        if progress is not None:
            progress(i + 1, len(typed), ns)
    return ImportReport(
        tenant=tenant, dry_run=dry_run, namespaces=rows, schemas=sorted(new_schemas)
    )


class HistoryImport(msgspec.Struct, frozen=True):
    """The outcome of :func:`import_history`."""

    tenant: str
    dry_run: bool
    keys: int
    versions: int
    replaced: list[str] = []
    revision: int | None = None


async def import_history(
    store: Store,
    tenant: str,
    document: ImportDocument,
    *,
    replace: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    reason: str = "",
) -> HistoryImport:
    """Import an export made with history, keeping each key's versions and timestamps.

    Keys the tenant already has (live or deleted) are refused with
    :class:`Conflict` unless ``replace``. Without ``replace`` the keys and
    schemas are added by the snapshot restore script in ``merge`` mode (other
    keys untouched); with it, the live tenant is captured, the file's keys
    and schemas laid over it, and the result restored in ``replace`` mode (a
    write to the tenant while that runs may be lost, as with a restore). The
    tenant's revision moves past both the file's and its own, and watchers
    re-list (a ``reset`` event).
    """
    from ._redis.scripts import Scripts
    from ._snapshot.capture import capture_by_script
    from ._snapshot.format import TenantDump
    from ._snapshot.restore import restore_args, restore_one, run_after_restore

    validate_tenant(tenant)
    missing = [f"{ns}/{k}" for ns, keys in document.namespaces.items() for k in keys
               if not document.history.get(ns, {}).get(k)]  # fmt: skip
    if missing:
        raise InvalidInput(
            "--preserve-versions needs an export made with --include-history; "
            f"no versions for {', '.join(missing[:5])}",
            keys=missing[:100],
        )
    tk = TenantKeys(tenant)
    deleted = await store.redis.hget(tk.meta, "deleted_at")
    if deleted is not None:
        raise TenantNotFound(tenant)
    try:
        have_schemas = await store.schemas(tenant)
        current = (await store.read_state(tenant, list(document.namespaces))).namespaces
    except TenantNotFound:
        have_schemas, current = {}, {}
    schemas = {**have_schemas, **document.schemas}
    _typed(document.namespaces, schemas, False)
    for ns in document.schemas:  # the other keys of a namespace must fit its new schema
        others = {k: e.value for k, e in current.get(ns, {}).items()
                  if k not in document.namespaces.get(ns, {})}  # fmt: skip
        check_values(effective_specs(schemas, ns), others)
    taken = await _existing_keys(store, tk, document.namespaces)
    if taken and not replace:
        raise Conflict(
            f"{tenant} already has {len(taken)} of these keys ({', '.join(taken[:5])}); "
            "--replace overwrites their history",
            keys=taken[:100],
        )
    values: dict[str, list[bytes]] = {}
    history: dict[str, list[bytes]] = {}
    count = 0
    top = document.revision
    for ns, names in document.namespaces.items():
        for key in names:
            versions = sorted(document.history[ns][key], key=lambda v: v.version)
            for v in versions:
                _codec.check_json(key, v.value)
                if not 1 <= v.version <= MAX_VERSION or v.revision < 0:
                    raise InvalidInput(f"{ns}/{key}: version out of range", key=key)
                top = max(top, v.revision)
            last = versions[-1]
            if last.deleted:
                raise InvalidInput(f"{ns}/{key}: its newest version is a delete", key=key)
            values.setdefault(ns, []).extend((key.encode(), _entry_record(last)))
            history.setdefault(ns, []).extend(
                hist_member_prefix(key, v.version) + _version_record(v) for v in versions
            )
            count += len(versions)
    total = sum(len(k) for k in document.namespaces.values())
    report = HistoryImport(
        tenant=tenant, dry_run=dry_run, keys=total, versions=count, replaced=taken
    )
    if dry_run:
        return report
    raw_schemas = {ns: _codec.encode(s) for ns, s in document.schemas.items()}
    scripts = Scripts(store.redis)
    mode = "merge"
    dump = TenantDump(
        tenant=tenant, revision=top, epoch="", meta={"created_at": _codec.now_iso()},
        namespaces=sorted(document.namespaces), schemas=raw_schemas, values=values, trash={},
        history=history, log=[],
    )  # fmt: skip
    if replace:
        live = await capture_by_script(scripts, tenant)
        if live is not None:
            mode = "replace"
            dump = _overlay(live, dump)
    args = restore_args(
        dump, tenant, mode=mode, actor=actor or store.settings.actor,
        reason=reason or "import with versions", log_limit=store.settings.log_limit,
    )  # fmt: skip
    await store.redis.sadd(TENANTS_KEY, tenant)  # listed before it holds data
    revision = (await restore_one(scripts, dump, tenant, args))[0]
    await run_after_restore(store, [tenant])
    return msgspec.structs.replace(report, revision=revision)


async def _existing_keys(
    store: Store, tk: TenantKeys, spaces: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """``ns/key`` of the keys that have any history in the tenant (live or deleted)."""
    pipe = store.redis.pipeline(transaction=False)
    names: list[str] = []
    for ns, keys in spaces.items():
        for key in keys:
            prefix = hist_member_prefix(key)
            pipe.zrangebylex(tk.hist(ns), b"[" + prefix, b"[" + prefix + b"\xff", start=0, num=1)
            names.append(f"{ns}/{key}")
    found = await pipe.execute() if names else []
    return [name for name, hit in zip(names, found, strict=True) if hit]


def _stamp(v: Version) -> bytes:
    at = v.updated_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return b'{"version":%d,"revision":%d,"updated_at":%s,"updated_by":%s' % (
        v.version,
        v.revision,
        _codec.encode(at),
        _codec.encode(v.updated_by),
    )


def _entry_record(v: Version) -> bytes:
    return _stamp(v) + b',"value":' + _codec.encode(v.value) + b"}"


def _version_record(v: Version) -> bytes:
    deleted = b"true" if v.deleted else b"false"
    value = b"null" if v.deleted else _codec.encode(v.value)
    return (
        _stamp(v)
        + b',"deleted":'
        + deleted
        + b',"reason":'
        + _codec.encode(v.reason)
        + b',"value":'
        + value
        + b"}"
    )


def _overlay(live: Any, mine: Any) -> Any:
    """The live tenant's dump with ``mine``'s keys, their history and its schemas laid over."""
    values = {ns: list(flat) for ns, flat in live.values.items()}
    history = {ns: list(members) for ns, members in live.history.items()}
    for ns, flat in mine.values.items():
        keys = set(flat[0::2])
        old = values.get(ns, [])
        kept: list[bytes] = []
        for i in range(0, len(old), 2):
            if old[i] not in keys:
                kept.extend(old[i : i + 2])
        values[ns] = kept + flat
        prefixes = tuple(k + b"|" for k in keys)
        history[ns] = [m for m in history.get(ns, []) if not m.startswith(prefixes)]
        history[ns] += mine.history.get(ns, [])
    return msgspec.structs.replace(
        live,
        revision=max(live.revision, mine.revision),
        namespaces=sorted(set(live.namespaces) | set(mine.namespaces)),
        schemas={**live.schemas, **mine.schemas},
        values=values,
        history=history,
    )
