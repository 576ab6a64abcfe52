"""CLI: reading and writing config (get, set, delete, history, rollback, schema).

Values as typed (see :mod:`._values`): ``key=text`` is a string unless the
key's schema types it, ``key:=json`` is JSON, ``key=@file`` / ``key=@-`` read
the text from a file or stdin. Every command that changes data has
``--dry-run``: it checks the change exactly as the write would and prints the
diff, writing nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer

from .._redis.names import validate_namespace
from ..exceptions import InvalidInput, SchemaProblem, SchemaViolation
from ..schema import decode_schema_document, mask_value, masked_schema
from ..store import Store
from . import _preview
from ._backend import Backend, with_backend, with_store
from ._common import DataDir, JsonFlag, RedisUrl, Server, ShowSecrets, Token, target
from ._output import Format, OutputOption, choose, emit, line, run, text
from ._values import parse_assignments

Tenant = Annotated[str, typer.Argument(help="Tenant name.")]
Namespace = Annotated[str, typer.Argument(help="Namespace (one agent, service or scope).")]
Reason = Annotated[str, typer.Option("--reason", help="Why: kept in the audit trail.")]
Actor = Annotated[str | None, typer.Option("--actor", envvar="KVCONF_ACTOR", help="Who.")]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Check and print the diff it would commit; write nothing."),
]
Category = Annotated[
    str | None, typer.Option("--category", help="Only keys of this schema category.")
]


def _entry_doc(key: str, entry: Any, value: Any) -> dict[str, Any]:
    return {"key": key, "value": value, "version": entry.version, "revision": entry.revision,
            "updated_at": entry.updated_at, "updated_by": entry.updated_by}  # fmt: skip


def get(
    tenant: Tenant,
    namespace: Namespace,
    key: Annotated[str | None, typer.Argument(help="Key (omit for the whole namespace).")] = None,
    effective: Annotated[
        bool, typer.Option("--effective", help="Resolve layers (defaults, environment, schema).")
    ] = False,
    category: Category = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print a key, or every key of a namespace, with version and audit data.

    ``-o value`` prints only the value(s), one per line (strings raw, other
    values as compact JSON), for scripts: ``kvconf get acme ai-12 timeout -o value``.
    """
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        specs = await store.specs(tenant, namespace)

        def shown(k: str, value: Any) -> Any:
            return value if show_secrets else mask_value(value, specs.get(k))

        def wanted(k: str) -> bool:
            spec = specs.get(k)
            return category is None or (spec is not None and spec.category == category)

        if effective:
            if key is not None:
                explained = {key: await store.explain_key(tenant, namespace, key)}
            else:
                explained = await store.explain(tenant, namespace)
            rows = [{"key": k, "value": shown(k, e.value), "layer": e.layer}
                    for k, e in explained.items() if wanted(k)]  # fmt: skip
            emit(fmt, rows[0] if key is not None else rows,
                 columns=("key", "value", "layer"),
                 rows=[(r["key"], text(r["value"]), str(r["layer"])) for r in rows],
                 values=[r["value"] for r in rows])  # fmt: skip
            return
        if key is not None:
            entries = {key: await store.get(tenant, namespace, key)}
        else:
            entries = await store.get_namespace(tenant, namespace)
        out = [_entry_doc(k, e, shown(k, e.value))
               for k, e in sorted(entries.items()) if wanted(k)]  # fmt: skip
        emit(fmt, out[0] if key is not None else out,
             columns=("key", "value", "version", "revision", "updated_at", "updated_by"),
             rows=[(r["key"], text(r["value"]), str(r["version"]), str(r["revision"]),
                    r["updated_at"].isoformat(), r["updated_by"]) for r in out],
             values=[r["value"] for r in out])  # fmt: skip

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def _written(fmt: Format, result: Any, summary: str) -> None:
    if fmt is Format.table:
        line(summary)
    else:
        emit(fmt, result, values=[result.revision])


def set_(
    tenant: Tenant,
    namespace: Namespace,
    pairs: Annotated[
        list[str],
        typer.Argument(
            help="KEY=TEXT (a string, or the schema's type), KEY:=JSON (retries:=3, "
            "debug:=true, hosts:='[\"a\"]'), KEY=@FILE / KEY=@- (text from a file / stdin), "
            "KEY:=@FILE (JSON from a file).",
            show_default=False,
        ),
    ],
    expect_version: Annotated[
        int | None,
        typer.Option("--expect-version", help="CAS: the version the key must have (0: absent)."),
    ] = None,
    dry_run: DryRun = False,
    reason: Reason = "",
    actor: Actor = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Set one or more keys of a namespace as one change set (one revision).

    Values are taken as typed, never guessed: ``version=1.10`` is the string
    "1.10"; ``retries:=3`` is the number 3. A key with a schema type converts
    ``KEY=TEXT`` to that type ("30" is 30 for an int key). Every problem (bad
    JSON, wrong type, schema rule) is listed at once, one per line (exit 5).
    """
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        known = await store.exists(tenant)
        specs = await store.specs(tenant, namespace) if known else {}
        values, problems = parse_assignments(pairs, specs)
        expect = None
        if expect_version is not None:
            if len(pairs) != 1:
                raise InvalidInput("--expect-version needs exactly one KEY=VALUE")
            expect = dict.fromkeys(values, expect_version)
        if problems:
            try:  # the schema's verdict on the usable values, so every problem shows at once
                if values:
                    await store.check(tenant, namespace, values)
            except SchemaViolation as exc:
                problems.extend(exc.problems)
            raise SchemaViolation(_sorted(problems))
        if dry_run:
            rows = await _preview.namespace_changes(
                store, tenant, namespace, values, (), show_secrets, expect
            )
            _preview.show(fmt, tenant, rows, namespace=namespace)
            return
        result = await store.set_many(
            tenant, namespace, values, expect=expect, actor=actor, reason=reason
        )
        versions = ", ".join(f"{k} v{v}" for k, v in result.versions.items())
        _written(fmt, result, f"revision {result.revision}: {versions}")

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def _sorted(problems: list[SchemaProblem]) -> list[SchemaProblem]:
    return sorted(problems, key=lambda p: p.key)


def delete(
    tenant: Tenant,
    namespace: Namespace,
    keys: Annotated[list[str], typer.Argument(help="Keys to delete.")],
    dry_run: DryRun = False,
    reason: Reason = "",
    actor: Actor = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Delete keys (each keeps its history; the delete is a version)."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        if dry_run:
            rows = await _preview.namespace_changes(
                store, tenant, namespace, {}, keys, show_secrets
            )
            _preview.show(fmt, tenant, rows, namespace=namespace)
            return
        result = await store.delete(tenant, namespace, keys, actor=actor, reason=reason)
        _written(fmt, result, f"revision {result.revision}: deleted {', '.join(keys)}")

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def history(
    tenant: Tenant,
    namespace: Namespace,
    key: Annotated[str, typer.Argument(help="Key.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    before: Annotated[
        int | None, typer.Option("--before", help="Page: versions below this.")
    ] = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print a key's versions, newest first."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        spec = (await store.specs(tenant, namespace)).get(key)
        versions = await store.history(tenant, namespace, key, limit=limit, before=before)
        if not show_secrets:
            versions = [msgspec.structs.replace(v, value=mask_value(v.value, spec))
                        if not v.deleted else v for v in versions]  # fmt: skip
        emit(fmt, versions,
             columns=("version", "revision", "value", "updated_at", "updated_by", "reason"),
             rows=[(str(v.version), str(v.revision), "(deleted)" if v.deleted else text(v.value),
                    v.updated_at.isoformat(), v.updated_by, v.reason) for v in versions],
             values=[None if v.deleted else v.value for v in versions])  # fmt: skip

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def rollback(
    tenant: Tenant,
    namespace: Annotated[
        str | None,
        typer.Argument(
            help="Namespace (with --to-revision: omit for the whole tenant).", show_default=False
        ),
    ] = None,
    key: Annotated[str | None, typer.Argument(help="Key (a key rollback).")] = None,
    version: Annotated[
        int | None,
        typer.Argument(help="The key's version whose value becomes current.", show_default=False),
    ] = None,
    to_revision: Annotated[
        int | None,
        typer.Option(
            "--to-revision", min=0, help="Bring the namespace (or tenant) back to this revision."
        ),
    ] = None,
    expect_version: Annotated[int | None, typer.Option("--expect-version")] = None,
    dry_run: DryRun = False,
    reason: Reason = "",
    actor: Actor = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Roll back one key, or a namespace or whole tenant, as a new version/revision.

    \b
    kvconf rollback TENANT NAMESPACE KEY VERSION      one key to an earlier version
    kvconf rollback TENANT NAMESPACE --to-revision R  a namespace to revision R
    kvconf rollback TENANT --to-revision R            every namespace to revision R

    A revision rollback is one change set with compare-and-set on every key
    it touches: a concurrent write fails it whole (exit 4).
    """
    fmt = choose(output, as_json)
    if to_revision is not None:
        if key is not None or version is not None:
            raise typer.BadParameter("--to-revision takes TENANT [NAMESPACE], not a key/version")
        if expect_version is not None:
            raise typer.BadParameter("--expect-version applies to a key rollback only")
    elif namespace is None or key is None or version is None:
        raise typer.BadParameter(
            "give NAMESPACE KEY VERSION (a key rollback) or --to-revision R (a revision rollback)"
        )

    async def by_key(store: Store) -> None:
        assert namespace is not None
        assert key is not None
        assert version is not None
        if dry_run:
            old = await store.version(tenant, namespace, key, version)
            values = {} if old.deleted else {key: old.value}
            deletes = [key] if old.deleted else []
            expect = None if expect_version is None else {key: expect_version}
            rows = await _preview.namespace_changes(
                store, tenant, namespace, values, deletes, show_secrets, expect
            )
            _preview.show(fmt, tenant, rows, namespace=namespace)
            return
        result = await store.rollback(
            tenant, namespace, key, version,
            expect_version=expect_version, actor=actor, reason=reason,
        )  # fmt: skip
        _written(fmt, result, f"revision {result.revision}: {key} v{result.versions[key]}")

    async def by_revision(backend: Backend) -> None:
        assert to_revision is not None
        if dry_run:
            rows = await backend.rollback_preview(
                tenant, to_revision, namespace=namespace, show_secrets=show_secrets
            )
            _preview.show(fmt, tenant, rows, namespace=namespace, to_revision=to_revision)
            return
        results = await backend.rollback(
            tenant, to_revision, namespace=namespace, actor=actor, reason=reason
        )
        if not results:
            if fmt is Format.table:
                line(f"nothing to roll back: already as at revision {to_revision}")
            else:
                emit(fmt, {"tenant": tenant, "revision": None, "versions": {}}, values=[])
            return
        result = results[0]
        _written(fmt, result, f"revision {result.revision}: {len(result.versions)} key(s) "
                              f"back to revision {to_revision}")  # fmt: skip

    where = target(redis_url, data_dir, server, token)
    if to_revision is not None:
        run(with_backend(where, by_revision), fmt)
    else:
        run(with_store(where, by_key), fmt)


def schema(
    tenant: Tenant,
    namespace: Annotated[
        str | None, typer.Argument(help="Namespace (omit: every schema of the tenant).")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--set", help="Replace the schema with this JSON file ('-': stdin)."),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the schema.")] = False,
    show_secrets: ShowSecrets = False,
    reason: Reason = "",
    actor: Actor = None,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print a namespace's schema (JSON by default; -o yaml), or replace or remove it.

    Without NAMESPACE: every schema of the tenant, by namespace. Defaults and
    choices of sensitive keys print as ``"***"`` unless ``--show-secrets``.
    """
    fmt = choose(output, True) if output is not None or as_json else Format.json
    if fmt is Format.table:
        fmt = Format.json  # a schema is a document, not rows

    async def go(store: Store) -> None:
        if namespace is None:
            if remove or file is not None:
                raise InvalidInput("--set and --remove need a NAMESPACE", field="namespace")
            every = await store.schemas(tenant)
            emit(fmt, every if show_secrets else
                 {ns: masked_schema(found, every, ns) for ns, found in every.items()})  # fmt: skip
            return
        if remove or file is not None:
            document = None
            if file is not None:
                raw = sys.stdin.read() if str(file) == "-" else file.read_text()
                document = decode_schema_document(raw)
            rev = await store.set_schema(tenant, namespace, document, actor=actor, reason=reason)
            line(f"revision {rev}: schema of {namespace} {'set' if document else 'removed'}")
            return
        schemas = await store.schemas(tenant)
        found = schemas.get(validate_namespace(namespace))
        shown = found if found is None or show_secrets else masked_schema(found, schemas, namespace)
        emit(fmt, shown)

    where = target(redis_url, data_dir, server, token)
    run(with_store(where, go), Format.json if fmt is Format.value else fmt)


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``kvconf`` app."""
    app.command()(get)
    app.command("set")(set_)
    app.command()(delete)
    app.command()(history)
    app.command()(rollback)
    app.command()(schema)
