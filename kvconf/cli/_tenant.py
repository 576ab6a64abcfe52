"""CLI: ``kvconf tenant list|info|create|clone|delete|undelete`` (``kvconf tenants`` lists).

``create --template SRC`` copies a tenant's schemas and ``_defaults``; ``clone``
copies every namespace. ``--set NAMESPACE/KEY=VALUE`` overrides values (typed
as in ``kvconf set``). ``delete`` is soft (``undelete`` brings everything
back); ``delete --hard`` saves a snapshot first and then removes every key.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ..exceptions import SchemaViolation, TenantNotFound
from ..models import KeySpec
from ..schema import effective_specs
from ..store import Store
from ._backend import Backend, with_backend, with_store
from ._common import DataDir, JsonFlag, RedisUrl, Server, Target, Token, target
from ._data import Actor, DryRun, Reason
from ._output import Format, OutputOption, choose, emit, line, run
from ._values import parse_assignments

tenant_app = typer.Typer(
    name="tenant", help="List, create, clone, delete and undelete tenants.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="Tenant name.")]
Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="NAMESPACE/KEY=TEXT or NAMESPACE/KEY:=JSON: a value of the new tenant (repeatable).",
    ),
]


async def _overrides(
    store: Store, source: str | None, items: list[str]
) -> dict[str, dict[str, Any]]:
    schemas = await store.schemas(source) if source is not None else {}
    by_ns: dict[str, list[str]] = {}
    for item in items:
        ns, sep, pair = item.partition("/")
        if not sep or not ns:
            raise typer.BadParameter(f"--set wants NAMESPACE/KEY=VALUE, got {item.split('=')[0]!r}")
        by_ns.setdefault(ns, []).append(pair)
    out: dict[str, dict[str, Any]] = {}
    problems = []
    for ns, pairs in by_ns.items():
        specs: dict[str, KeySpec] = effective_specs(schemas, ns)
        values, found = parse_assignments(pairs, specs)
        out[ns] = values
        problems.extend(found)
    if problems:
        raise SchemaViolation(problems)
    return out


def _create(
    name: str, source: str | None, whole: bool, overrides: list[str], actor: str | None,
    reason: str, fmt: Format, where: Target,
) -> None:  # fmt: skip
    async def go(backend: Backend) -> None:
        values = await _overrides(backend.store, source, overrides)
        revision = await backend.provision(
            name, source=source, whole=whole, overrides=values, actor=actor, reason=reason
        )
        how = "" if source is None else (" as a clone of " if whole else " from template ") + source
        if fmt is Format.table:
            line(f"created {name}{how} at revision {revision}")
        else:
            emit(fmt, {"tenant": name, "revision": revision, "source": source}, values=[revision])

    run(with_backend(where, go), fmt)


@tenant_app.command("list")
def list_(
    include_deleted: Annotated[
        bool, typer.Option("--include-deleted", help="Also soft-deleted tenants, with state.")
    ] = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """List tenants (``-o value``: names only)."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        states = await backend.tenant_states(include_deleted)
        if not include_deleted:
            emit(fmt, [s.tenant for s in states], columns=("tenant",),
                 rows=[(s.tenant,) for s in states], values=[s.tenant for s in states])  # fmt: skip
            return
        emit(fmt, states, columns=("tenant", "state", "deleted_at"),
             rows=[(s.tenant, s.state, "" if s.deleted_at is None else s.deleted_at.isoformat())
                   for s in states],
             values=[s.tenant for s in states])  # fmt: skip

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


@tenant_app.command("info")
def info(
    name: Name,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """A tenant's revision, epoch, namespaces and creation time."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        i = await store.info(name)
        emit(fmt, i, columns=("tenant", "revision", "epoch", "namespaces", "created_at"),
             rows=[(i.tenant, str(i.revision), i.epoch, ",".join(i.namespaces),
                    i.created_at.isoformat() if i.created_at else "")],
             values=[i.revision])  # fmt: skip

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


@tenant_app.command("create")
def create(
    name: Name,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Copy this tenant's schemas and _defaults values."),
    ] = None,
    overrides: Overrides = None,
    reason: Reason = "",
    actor: Actor = None,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Create a tenant: empty, or from a template tenant, with --set overrides."""
    fmt = choose(output, as_json)
    where = target(redis_url, data_dir, server, token)
    _create(name, template, False, overrides or [], actor, reason, fmt, where)


@tenant_app.command("clone")
def clone(
    source: Annotated[str, typer.Argument(help="Tenant to copy (schemas and every namespace).")],
    name: Name,
    overrides: Overrides = None,
    reason: Reason = "",
    actor: Actor = None,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Create tenant NAME as a copy of SOURCE (current values; history starts anew)."""
    fmt = choose(output, as_json)
    where = target(redis_url, data_dir, server, token)
    _create(name, source, True, overrides or [], actor, reason, fmt, where)


@tenant_app.command("delete")
def delete(
    name: Name,
    hard: Annotated[
        bool,
        typer.Option("--hard", help="Remove every key for good (a snapshot is saved first)."),
    ] = False,
    dry_run: DryRun = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Delete a tenant: soft by default (``undelete`` restores it), or --hard."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        store = backend.store
        kind = "hard" if hard else "soft"
        if dry_run:
            deleted = await store.is_deleted(name)
            if deleted and not hard:
                raise TenantNotFound(name)
            namespaces = [] if deleted else (await store.info(name)).namespaces
            doc = {"dry_run": True, "tenant": name, "deleted": kind, "namespaces": namespaces}
            if fmt is Format.table:
                listed = ", ".join(namespaces) or "-"
                line(f"dry run: nothing was written; would {kind}-delete {name} "
                     f"({len(namespaces)} namespace(s): {listed})")  # fmt: skip
            else:
                emit(fmt, doc, values=namespaces)
            return
        saved_to = await backend.delete_tenant(name, hard=hard)
        doc = {"tenant": name, "deleted": kind, "snapshot": saved_to}
        if fmt is Format.table:
            saved = f" (snapshot: {saved_to})" if saved_to is not None else ""
            line(f"{kind}-deleted {name}{saved}")
        else:
            emit(fmt, doc, values=[name])

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


@tenant_app.command("undelete")
def undelete(
    name: Name,
    dry_run: DryRun = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Bring back a soft-deleted tenant with all its values."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        if dry_run:
            deleted = await store.is_deleted(name)
            if fmt is Format.table:
                verb = "undelete" if deleted else "not change"
                line(f"dry run: nothing was written; would {verb} {name}")
            else:
                emit(fmt, {"dry_run": True, "tenant": name, "would_commit": deleted},
                     values=[deleted])  # fmt: skip
            return
        await store.undelete_tenant(name)
        if fmt is Format.table:
            line(f"undeleted {name}")
        else:
            emit(fmt, {"tenant": name, "deleted": False}, values=[name])

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def tenants(
    tenant: Annotated[str | None, typer.Argument(help="Show one tenant's details.")] = None,
    include_deleted: Annotated[bool, typer.Option("--include-deleted")] = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """List tenants, or show one (an alias of ``tenant list`` / ``tenant info``)."""
    if tenant is not None:
        info(tenant, output, as_json, redis_url, data_dir, server, token)
    else:
        list_(include_deleted, output, as_json, redis_url, data_dir, server, token)


def register(app: typer.Typer) -> None:
    """Add ``tenant`` (and the ``tenants`` alias) to the ``kvconf`` app."""
    app.add_typer(tenant_app)
    app.command()(tenants)
