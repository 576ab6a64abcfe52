"""CLI: reading and writing config (get, set, delete, history, rollback, tenants, schema)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from .._redis.names import validate_namespace
from ..exceptions import InvalidInput
from ..schema import coerce_text, decode_schema_document, mask_value, masked_schema
from ..store import Store
from ._common import (
    DataDir,
    JsonFlag,
    RedisUrl,
    ShowSecrets,
    console,
    opened_store,
    print_json,
    run,
    settings,
)

Tenant = Annotated[str, typer.Argument(help="Tenant name.")]
Namespace = Annotated[str, typer.Argument(help="Namespace (one agent, service or scope).")]
Reason = Annotated[str, typer.Option("--reason", help="Why: kept in the audit trail.")]
Actor = Annotated[str | None, typer.Option("--actor", envvar="KVCONF_ACTOR", help="Who.")]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


async def _with_store(redis_url: str | None, data_dir: Path | None, fn: Any) -> Any:
    async with opened_store(settings(redis_url, data_dir)) as store:
        return await fn(store)


def get(
    tenant: Tenant,
    namespace: Namespace,
    key: Annotated[str | None, typer.Argument(help="Key (omit for the whole namespace).")] = None,
    effective: Annotated[
        bool, typer.Option("--effective", help="Resolve layers (defaults, environment, schema).")
    ] = False,
    show_secrets: ShowSecrets = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Print a key, or every key of a namespace, with version and audit data."""

    async def go(store: Store) -> None:
        specs = await store.specs(tenant, namespace)
        if effective:
            explained = await store.explain(tenant, namespace)
            if key is not None:
                explained = {key: await store.explain_key(tenant, namespace, key)}
            rows = [
                {"key": k, "value": e.value if show_secrets else mask_value(e.value, specs.get(k)),
                 "layer": e.layer}
                for k, e in explained.items()
            ]  # fmt: skip
            if as_json:
                print_json(rows if key is None else rows[0])
                return
            table = Table("key", "value", "layer")
            for row in rows:
                table.add_row(row["key"], _text(row["value"]), str(row["layer"]))
            console.print(table)
            return
        if key is not None:
            entries = {key: await store.get(tenant, namespace, key)}
        else:
            entries = await store.get_namespace(tenant, namespace)
        out = []
        for k, e in sorted(entries.items()):
            value = e.value if show_secrets else mask_value(e.value, specs.get(k))
            out.append({"key": k, "value": value, "version": e.version, "revision": e.revision,
                        "updated_at": e.updated_at, "updated_by": e.updated_by})  # fmt: skip
        if as_json:
            print_json(out[0] if key is not None else out)
            return
        table = Table("key", "value", "version", "revision", "updated_at", "updated_by")
        for row in out:
            table.add_row(row["key"], _text(row["value"]), str(row["version"]),
                          str(row["revision"]), row["updated_at"].isoformat(),
                          row["updated_by"])  # fmt: skip
        console.print(table)

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def set_(
    tenant: Tenant,
    namespace: Namespace,
    pairs: Annotated[list[str], typer.Argument(help="KEY=VALUE ... (VALUE as JSON or text).")],
    expect_version: Annotated[
        int | None,
        typer.Option("--expect-version", help="CAS: the version the key must have (0: absent)."),
    ] = None,
    reason: Reason = "",
    actor: Actor = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Set one or more keys of a namespace as one change set.

    Values are converted to the key's schema type ("30" is an int for an int
    key); without a schema, JSON is tried and plain text is the fallback.
    """

    async def go(store: Store) -> None:
        specs = await store.specs(tenant, namespace)
        values: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            if not sep:
                raise InvalidInput(f"expected KEY=VALUE, got {pair!r}")
            try:
                values[key] = coerce_text(text, specs.get(key))
            except ValueError as exc:
                raise InvalidInput(f"{key}: {exc}", key=key) from exc
        expect = None
        if expect_version is not None:
            if len(values) != 1:
                raise InvalidInput("--expect-version needs exactly one KEY=VALUE")
            expect = {next(iter(values)): expect_version}
        result = await store.set_many(
            tenant, namespace, values, expect=expect, actor=actor, reason=reason
        )
        if as_json:
            print_json(result)
        else:
            versions = ", ".join(f"{k} v{v}" for k, v in result.versions.items())
            console.print(f"revision {result.revision}: {versions}", highlight=False)

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def delete(
    tenant: Tenant,
    namespace: Namespace,
    keys: Annotated[list[str], typer.Argument(help="Keys to delete.")],
    reason: Reason = "",
    actor: Actor = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Delete keys (each keeps its history; the delete is a version)."""

    async def go(store: Store) -> None:
        result = await store.delete(tenant, namespace, keys, actor=actor, reason=reason)
        if as_json:
            print_json(result)
        else:
            console.print(f"revision {result.revision}: deleted {', '.join(keys)}")

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def history(
    tenant: Tenant,
    namespace: Namespace,
    key: Annotated[str, typer.Argument(help="Key.")],
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    before: Annotated[
        int | None, typer.Option("--before", help="Page: versions below this.")
    ] = None,
    show_secrets: ShowSecrets = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Print a key's versions, newest first."""

    async def go(store: Store) -> None:
        spec = (await store.specs(tenant, namespace)).get(key)
        versions = await store.history(tenant, namespace, key, limit=limit, before=before)
        if not show_secrets:
            versions = [msgspec.structs.replace(v, value=mask_value(v.value, spec))
                        if not v.deleted else v for v in versions]  # fmt: skip
        if as_json:
            print_json(versions)
            return
        table = Table("version", "revision", "value", "updated_at", "updated_by", "reason")
        for v in versions:
            table.add_row(str(v.version), str(v.revision),
                          "(deleted)" if v.deleted else _text(v.value),
                          v.updated_at.isoformat(), v.updated_by, v.reason)  # fmt: skip
        console.print(table)

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def rollback(
    tenant: Tenant,
    namespace: Namespace,
    key: Annotated[str, typer.Argument(help="Key.")],
    version: Annotated[int, typer.Argument(help="The version whose value becomes current.")],
    expect_version: Annotated[int | None, typer.Option("--expect-version")] = None,
    reason: Reason = "",
    actor: Actor = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Make an earlier version of a key current again (as a new version)."""

    async def go(store: Store) -> None:
        result = await store.rollback(
            tenant, namespace, key, version,
            expect_version=expect_version, actor=actor, reason=reason,
        )  # fmt: skip
        if as_json:
            print_json(result)
        else:
            console.print(f"revision {result.revision}: {key} v{result.versions[key]}")

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def tenants(
    tenant: Annotated[str | None, typer.Argument(help="Show one tenant's details.")] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """List tenants, or show one tenant's revision, epoch and namespaces."""

    async def go(store: Store) -> None:
        if tenant is not None:
            info = await store.info(tenant)
            if as_json:
                print_json(info)
            else:
                console.print(f"{info.tenant}: revision {info.revision}, epoch {info.epoch}, "
                              f"namespaces: {', '.join(info.namespaces) or '(none)'}")  # fmt: skip
            return
        names = await store.tenants()
        if as_json:
            print_json(names)
        else:
            for name in names:
                console.print(name, highlight=False)

    run(_with_store(redis_url, data_dir, go), as_json=as_json)


def schema(
    tenant: Tenant,
    namespace: Namespace,
    file: Annotated[
        Path | None,
        typer.Option("--set", help="Replace the schema with this JSON file ('-': stdin)."),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the schema.")] = False,
    show_secrets: ShowSecrets = False,
    reason: Reason = "",
    actor: Actor = None,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Print a namespace's schema as JSON, or replace or remove it.

    Defaults and choices of sensitive keys print as ``"***"`` unless
    ``--show-secrets``.
    """

    async def go(store: Store) -> None:
        if remove or file is not None:
            document = None
            if file is not None:
                text = sys.stdin.read() if str(file) == "-" else file.read_text()
                document = decode_schema_document(text)
            rev = await store.set_schema(tenant, namespace, document, actor=actor, reason=reason)
            console.print(
                f"revision {rev}: schema of {namespace} {'set' if document else 'removed'}"
            )
            return
        schemas = await store.schemas(tenant)
        found = schemas.get(validate_namespace(namespace))
        if found is None or show_secrets:
            print_json(found)
        else:
            print_json(masked_schema(found, schemas, namespace))

    run(_with_store(redis_url, data_dir, go), as_json=True)


def register(app: typer.Typer) -> None:
    """Add the data commands to the ``kvconf`` app."""
    app.command()(get)
    app.command("set")(set_)
    app.command()(delete)
    app.command()(history)
    app.command()(rollback)
    app.command()(tenants)
    app.command()(schema)
