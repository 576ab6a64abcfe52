"""CLI: ``kvconf snapshot save | verify | list | restore``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .. import snapshot as snap
from .._snapshot.embedded import (
    JournalRecovery,
    close_embedded,
    open_embedded_store,
    persister_of,
)
from ..config import Settings
from ..exceptions import SnapshotNotFound
from ._backend import opened
from ._common import (
    DataDir,
    JsonFlag,
    NoServer,
    RedisUrl,
    Server,
    Target,
    Token,
    console,
    err_console,
    print_json,
    refuse_server,
    report_table,
    run,
    settings,
    target,
)
from ._remote import Remote

snapshot_app = typer.Typer(
    name="snapshot",
    help="Back up, check and restore tenants as safe snapshot files.",
    no_args_is_help=True,
)

SnapshotDir = Annotated[
    Path | None,
    typer.Option("--dir", help="Snapshot directory (default: <data dir>/snapshots)."),
]
File = Annotated[Path, typer.Argument(help="Snapshot file.", show_default=False)]


def _settings(redis_url: str | None, data_dir: Path | None) -> Settings:
    # the data dir travels as text: Settings decodes paths from strings
    return settings(redis_url, str(data_dir) if data_dir is not None else None)  # type: ignore[arg-type]


@contextmanager
def _progress(what: str, enabled: bool) -> Iterator[Callable[[int, int, str], None]]:
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[tenant]}"), TimeElapsedColumn(),
        console=err_console, transient=True, disable=not (enabled and err_console.is_terminal),
    )  # fmt: skip
    task = bar.add_task(what, total=None, tenant="")

    def update(done: int, total: int, tenant: str) -> None:
        bar.update(task, completed=done, total=total, tenant=tenant)

    with bar:
        yield update


def _summary_table(info: snap.SnapshotInfo) -> Table:
    table = Table()
    for name in ("tenant", "revision", "namespaces", "keys", "versions", "log", "deleted"):
        table.add_column(name, no_wrap=name == "tenant")
    for t in info.tenants:
        table.add_row(t.tenant, str(t.revision), str(t.namespaces), str(t.keys),
                      str(t.versions), str(t.log), "yes" if t.deleted else "")  # fmt: skip
    return table


def _size(info: snap.SnapshotInfo, unit: str = " bytes") -> str:
    """The file's size; a server does not tell it for a file that holds other tenants (0)."""
    return f"{info.size:,}{unit}" if info.size else "size not shown"


def _describe(info: snap.SnapshotInfo, verb: str) -> None:
    console.print(
        f"{verb} {info.path}: format {info.format}, created {info.created_at.isoformat()}, "
        f"{_size(info)}, {len(info.tenants)} tenant(s), {info.keys:,} keys, "
        f"{info.versions:,} versions",
        highlight=False,
        soft_wrap=True,
    )
    if info.tenants:
        console.print(_summary_table(info))


@snapshot_app.command("save")
def save_cmd(
    tenant: Annotated[
        list[str] | None, typer.Option("--tenant", "-t", help="Tenant to include (repeatable).")
    ] = None,
    directory: SnapshotDir = None,
    label: Annotated[str, typer.Option("--label", help="Added to the file name.")] = "",
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Save a snapshot of every live tenant (or the chosen ones).

    Through a server (``--server``): one snapshot per tenant in the server's
    data dir, each printed with the name ``snapshot restore --server`` takes.
    """
    where = target(redis_url, data_dir, server, token)

    async def go() -> list[snap.SnapshotInfo]:
        async with opened(where) as backend:
            with _progress("saving", not as_json) as progress:
                return await backend.save_snapshots(tenant, directory, label, progress)

    for info in run(go(), as_json=as_json):
        if as_json:
            print_json(info)
        else:
            _describe(info, "saved")


def _tenants_of(info: snap.SnapshotInfo, tenants: Sequence[str] | None) -> snap.SnapshotInfo:
    """``info`` with only the parts of ``tenants`` (all without), as a server shows it."""
    if not tenants:
        return info
    parts = [t for t in info.tenants if t.tenant in tenants]
    return msgspec.structs.replace(
        info, tenants=parts, keys=sum(t.keys for t in parts),
        versions=sum(t.versions for t in parts),
    )  # fmt: skip


def _given(ctx: typer.Context, *options: str) -> bool:
    """True when one of ``options`` is on the command line (not from the environment)."""
    return any(_on_command_line(ctx, name) for name in options)


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _local_only(ctx: typer.Context, where: Target, *options: str) -> None:
    """Exit 2 when an option naming a local directory is given with a server.

    ``--data-dir`` from ``KVCONF_DATA_DIR`` is ignored there, as by every command.
    """
    if where.server is None:
        return
    for param in ctx.command.params:
        if param.name in options and _on_command_line(ctx, param.name):
            raise typer.BadParameter(
                "a local directory: not available through a kvconf server "
                "(it keeps its snapshots under its own data dir)",
                param_hint=param.opts[0],
            )


@asynccontextmanager
async def _server(where: Target) -> AsyncIterator[Remote]:
    async with opened(where) as backend:
        assert isinstance(backend, Remote)  # where names a server
        yield backend


def _snapshot_file(file: Path, data_dir: Path | None) -> Path:
    """``file``, or the snapshot of that name in ``<data dir>/snapshots`` when there is
    no such file here (``snapshot save`` through a server prints names)."""
    if file.exists() or file.name != str(file):
        return file
    held = _settings(None, data_dir).data_dir / "snapshots" / file.name
    return held if held.exists() else file


@snapshot_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="Snapshot file (or a name in <data dir>/snapshots); through a server: the "
            "name of a snapshot it holds.",
            show_default=False,
        ),
    ],
    tenant: Annotated[
        list[str] | None,
        typer.Option("--tenant", "-t", help="Tenant to check the file for (repeatable)."),
    ] = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Check a snapshot's format, checksum and contents; print what it holds.

    With --tenant only those tenants' parts are shown (exit 3 if the file does
    not hold one). Through a server (``--server``): FILE is the name of a
    snapshot the server holds (as ``snapshot save --server`` prints it),
    checked by the server, which shows only the parts of tenants the token
    administers (default: every such tenant the file holds).
    """
    name = str(file)
    local = file.exists() or file.name != name  # a path: this machine's file
    # KVCONF_SERVER alone (no --server) gives way to a local file
    where = (
        Target(data_dir=data_dir)
        if server is None and local
        else target(None, data_dir, server, token)
    )
    _local_only(ctx, where, "data_dir")
    if where.server is not None and (file.name != name or name in (".", "..")):
        raise typer.BadParameter(
            "through a kvconf server, verify takes the name of a snapshot the server holds "
            "(as `snapshot save --server` prints it), not a local path",
            param_hint="FILE",
        )

    async def go() -> snap.SnapshotInfo:
        if where.server is not None:
            async with _server(where) as remote:
                return await remote.verify_snapshot(name, tenant)
        info = snap.verify(_snapshot_file(file, data_dir))
        missing = sorted(set(tenant or ()) - {t.tenant for t in info.tenants})
        if missing:
            raise SnapshotNotFound(
                f"snapshot {info.path} does not hold tenant(s) {', '.join(missing)}",
                name=info.path,
            )
        return _tenants_of(info, tenant)

    info = run(go(), as_json=as_json)
    if as_json:
        print_json(info)
    else:
        _describe(info, "OK")


@snapshot_app.command("list")
def list_cmd(
    ctx: typer.Context,
    tenant: Annotated[
        list[str] | None,
        typer.Option("--tenant", "-t", help="Only snapshots holding this tenant (repeatable)."),
    ] = None,
    directory: SnapshotDir = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """List snapshot files, oldest first (footers only: `verify` checks one).

    With --tenant: only files holding one of them, with only their parts.
    Through a server (``--server``): the snapshots it holds of each --tenant
    (default: every tenant the token administers), by the names `snapshot
    verify|restore --server` take; a file holding other tenants too shows only
    the parts of those.
    """
    where = target(None, data_dir, server, token)
    if server is None and where.server is not None and _given(ctx, "directory", "data_dir"):
        where = Target(data_dir=data_dir)  # KVCONF_SERVER alone gives way to a local directory
    _local_only(ctx, where, "directory", "data_dir")

    async def go() -> tuple[str, list[snap.SnapshotInfo]]:
        if where.server is not None:
            async with _server(where) as remote:
                return f"on {where.server}", await remote.list_snapshots(tenant)
        local = directory or _settings(None, data_dir).data_dir / "snapshots"
        found = [_tenants_of(info, tenant) for info in snap.list_snapshots(local)]
        return f"in {local}", [info for info in found if info.tenants or not tenant]

    where_text, found = run(go(), as_json=as_json)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"no snapshots {where_text}", highlight=False, soft_wrap=True)
        return
    table = Table()
    table.add_column("file (created at, UTC)", no_wrap=True)
    for name in ("tenants", "keys", "versions", "bytes"):
        table.add_column(name, justify="right")
    for info in found:
        table.add_row(Path(info.path).name, str(len(info.tenants)),
                      f"{info.keys:,}", f"{info.versions:,}", _size(info, unit=""))  # fmt: skip
    console.print(table)


@snapshot_app.command("restore")
def restore_cmd(
    file: File,
    tenant: Annotated[
        list[str] | None, typer.Option("--tenant", "-t", help="Tenant of the file (repeatable).")
    ] = None,
    as_tenant: Annotated[
        str | None, typer.Option("--as", help="Restore the one chosen tenant under this name.")
    ] = None,
    mode: Annotated[
        str, typer.Option("--mode", help="replace: exactly the file; merge: over live keys.")
    ] = "replace",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; write nothing.")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Kept in the audit trail.")] = "",
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Restore tenants from a snapshot (verified first; a safety snapshot is taken).

    Through a server (``--server``): FILE is the name of a snapshot the server
    holds (as ``snapshot save --server`` prints it), restored for each --tenant.
    """
    where = target(redis_url, data_dir, server, token)
    if where.server is not None and file.name != str(file):  # a usage error, as for verify
        raise typer.BadParameter(
            "through a kvconf server, restore takes the name of a snapshot the server holds "
            "(as `snapshot save --server` prints it), not a local path",
            param_hint="FILE",
        )

    async def go() -> snap.RestoreReport:
        if mode not in ("replace", "merge"):
            from ..exceptions import InvalidInput

            raise InvalidInput(f"--mode must be replace or merge, not {mode!r}")
        async with opened(where) as backend:
            with _progress("restoring", not as_json) as progress:
                return await backend.restore_snapshot(
                    file, tenants=tenant, as_tenant=as_tenant,
                    mode=mode,  # type: ignore[arg-type]
                    dry_run=dry_run, reason=reason, progress=progress,
                )  # fmt: skip

    report = run(go(), as_json=as_json)
    columns = ("tenant", "from", "mode", "revision", "added", "changed", "removed", "same")
    table = report_table(report, as_json, columns, {"tenant", "from", "revision"})
    if table is None:
        return
    for row in report.tenants:
        revs: Any = f"{row.live_revision} -> {row.revision}"
        table.add_row(row.tenant, row.source, row.mode, revs, str(row.added),
                      str(row.changed), str(row.removed), str(row.unchanged))  # fmt: skip
    console.print(table)
    if report.safety_snapshot:
        console.print(f"safety snapshot: {report.safety_snapshot}", highlight=False, soft_wrap=True)


@snapshot_app.command("recover")
def recover_cmd(
    as_json: JsonFlag = False, data_dir: DataDir = None, server: NoServer = None
) -> None:
    """Start the embedded data dir from the intact part of a damaged journal.

    The damaged journal is kept aside as ``<name>.damaged-<UTC time>``; what
    was lost (records after the damage, by tenant) is printed and logged.
    Run it while no ``kvconf serve`` holds the data dir.
    """
    refuse_server(server, "snapshot recover repairs a local data dir")

    async def go() -> list[JournalRecovery]:
        cfg = _settings(None, data_dir)
        store = await open_embedded_store(cfg, recover_journal=True)
        try:
            persister = persister_of(store)
            return list(persister.recovered) if persister is not None else []
        finally:
            await store.aclose()
            await close_embedded(cfg.data_dir)

    found = run(go(), as_json=as_json)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("the journal is intact: nothing to recover", highlight=False)
    for r in found:
        console.print(
            f"{r.path} was damaged at byte {r.offset}: kept aside as {r.kept_as}; started "
            f"from {r.intact} intact record(s); lost {r.lost} later record(s) of tenant(s) "
            f"{', '.join(r.tenants)}",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add the ``snapshot`` command group to the ``kvconf`` app."""
    app.add_typer(snapshot_app)
