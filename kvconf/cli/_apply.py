"""CLI: ``kvconf apply``, one atomic change set across namespaces of a tenant.

The file is the body of ``POST /api/v1/tenants/{t}/changes`` (the API's
``ChangeSetAcross``), as JSON or YAML::

    {"values":  {"svc": {"timeout": 30}, "web": {"theme": "dark"}},
     "deletes": {"web": ["legacy"]},
     "expect":  {"svc": {"timeout": 2}},
     "reason":  "move the timeout", "create": true}

Every field is optional (an empty change set is refused); ``expect`` maps
keys to the version each must have (0: absent, -1: exists, any version). The whole set
commits as one revision through :meth:`kvconf.Store.commit_across`, or
nothing does.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from .. import io
from .._codec import MAX_DEPTH, too_deep
from ..exceptions import InvalidInput
from ..models import WriteResult
from . import _preview
from ._backend import opened
from ._common import DataDir, JsonFlag, RedisUrl, Server, ShowSecrets, Token, target
from ._data import Actor, DryRun, Tenant
from ._output import Format, OutputOption, choose, emit, line, run

__all__ = ["ChangeSet", "load_change_set"]

#: The leading levels of a change set around each value: the document, ``values``,
#: the namespace. A value may nest :data:`MAX_DEPTH` levels below them.
_AROUND = 3


class ChangeSet(msgspec.Struct, forbid_unknown_fields=True):
    """An ``apply`` file: the fields of the API's ``ChangeSetAcross``, keyed by namespace."""

    values: dict[str, dict[str, Any]] = {}
    deletes: dict[str, list[str]] = {}
    expect: dict[str, dict[str, int]] = {}
    reason: str = ""
    create: bool = True


def _invalid(message: str, field: str = "document") -> InvalidInput:
    return InvalidInput(f"invalid change set: {message}", field=field)


_FIELDS = tuple(ChangeSet.__struct_fields__)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_shape(data: Any) -> None:
    """Name the first misshapen field by its path (``expect.svc.timeout``), never its value."""
    if not isinstance(data, dict):
        raise _invalid(f"expected an object of {', '.join(_FIELDS)}, got {_kind(data)}")
    for name in data:
        if name not in _FIELDS:
            raise _invalid(f"unknown field {name!r} (expected {', '.join(_FIELDS)})", str(name))
    for name in ("values", "deletes", "expect"):
        section = data.get(name, {})
        if not isinstance(section, dict):
            raise _invalid(f"{name}: expected an object of namespaces, got {_kind(section)}", name)
        for ns, inner in section.items():
            where = f"{name}.{ns}"
            if name == "deletes":
                if not isinstance(inner, list) or not all(isinstance(k, str) for k in inner):
                    raise _invalid(f"{where}: expected an array of key names", where)
                continue
            if not isinstance(inner, dict):
                raise _invalid(f"{where}: expected an object of keys, got {_kind(inner)}", where)
            if name == "expect":
                for key, version in inner.items():
                    if type(version) is not int:
                        raise _invalid(f"{where}.{key}: expected an integer version, got "
                                       f"{_kind(version)}", f"{where}.{key}")  # fmt: skip
    if not isinstance(data.get("reason", ""), str):
        raise _invalid(f"reason: expected a string, got {_kind(data['reason'])}", "reason")
    if not isinstance(data.get("create", True), bool):
        raise _invalid(f"create: expected true or false, got {_kind(data['create'])}", "create")


def _yaml(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInput("YAML needs PyYAML: pip install pyyaml (or use JSON)") from None
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise _invalid(f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        # The problem and its place only: str(exc) quotes the document's text.
        mark = getattr(exc, "problem_mark", None)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise _invalid(f"not valid YAML{where}: {problem}") from None


def load_change_set(text: str, fmt: io.Format) -> ChangeSet:
    """Parse an ``apply`` file (JSON or YAML) into a :class:`ChangeSet`.

    Raises :class:`InvalidInput` naming what is wrong and where (an unknown
    field, a version that is not an integer, a malformed document), never
    quoting a value.
    """
    if fmt == "json":
        deep = too_deep(text, MAX_DEPTH + _AROUND)  # before the decoder recurses into it
        if deep is not None:
            raise _invalid(f"nested deeper than {MAX_DEPTH} levels", deep)
        try:
            data = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise _invalid(f"not valid JSON: {exc}") from None
    else:
        data = _yaml(text)
    _check_shape(data)
    try:  # what the walk does not look at: names that are not strings (YAML)
        return msgspec.convert(data, ChangeSet)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None


def _read(file: str) -> str:
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text("utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}", field="file") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{file} is not UTF-8 text", field="file") from None


def _format(fmt: str | None, file: str) -> io.Format:
    chosen = fmt or io.detect_format(file if file != "-" else "")
    if chosen not in ("json", "yaml"):
        raise InvalidInput(f"--format must be json or yaml, not {chosen!r}", field="format")
    return chosen  # type: ignore[return-value]


def _written(fmt: Format, change: ChangeSet, result: WriteResult) -> None:
    if fmt is not Format.table:
        emit(fmt, result, values=[result.revision])
        return
    names = {k.partition("/")[0] for k in result.versions}
    line(f"revision {result.revision}: {len(result.versions)} key(s) in "
         f"{len(names)} namespace(s)")  # fmt: skip
    rows = []
    for name, version in sorted(result.versions.items()):
        ns, _, key = name.partition("/")
        rows.append((ns, key, "deleted" if key in change.deletes.get(ns, ()) else "set",
                     str(version)))  # fmt: skip
    emit(Format.table, None, columns=("namespace", "key", "change", "version"), rows=rows)


def apply(
    tenant: Tenant,
    file: Annotated[
        str, typer.Argument(help="The change set: a JSON or YAML file, or - for stdin.")
    ],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="json or yaml (default: from the file name; stdin: json)."
        ),
    ] = None,
    dry_run: DryRun = False,
    reason: Annotated[
        str | None,
        typer.Option("--reason", help="Why: kept in the audit trail (overrides the file's)."),
    ] = None,
    create: Annotated[
        bool | None,
        typer.Option(
            "--create/--no-create",
            help="Create the tenant if it is missing (default: the file's create, else yes).",
            show_default=False,
        ),
    ] = None,
    actor: Actor = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Commit a change set across namespaces of a tenant atomically: one revision, or nothing.

    \b
    FILE (JSON or YAML; the body of POST /api/v1/tenants/{t}/changes):
      {"values":  {"svc": {"timeout": 30}, "web": {"theme": "dark"}},
       "deletes": {"web": ["legacy"]},
       "expect":  {"svc": {"timeout": 2}},
       "reason": "...", "create": true}

    ``expect`` gives the version a key must have (0: absent, -1: exists, any version): a
    mismatch writes nothing and exits 4, naming each key ``namespace/key``.
    Every schema problem of every namespace is listed at once (exit 5), as
    is a malformed file. ``--dry-run`` makes every check the write makes and
    prints each key's change (added, changed, removed, unchanged), writing
    nothing.
    """
    out = choose(output, as_json)

    where = target(redis_url, data_dir, server, token)

    async def go() -> None:
        change = load_change_set(_read(file), _format(fmt, file))  # before connecting
        why = change.reason if reason is None else reason
        may_create = change.create if create is None else create
        async with opened(where) as backend:
            if dry_run:
                rows = await backend.changes_preview(
                    tenant, change.values, change.deletes, change.expect, create=may_create,
                    actor=actor, reason=why, show_secrets=show_secrets,
                )  # fmt: skip
                rows.sort(key=lambda r: (r["namespace"], r["key"]))
                _preview.show(out, tenant, rows)
                return
            result = await backend.store.commit_across(
                tenant, change.values, deletes=change.deletes, expect=change.expect,
                actor=actor, reason=why, create=may_create,
            )  # fmt: skip
        _written(out, change, result)

    run(go(), out)


def register(app: typer.Typer) -> None:
    """Add ``apply`` to the ``kvconf`` app."""
    app.command("apply")(apply)
