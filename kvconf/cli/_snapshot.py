"""CLI: ``kvconf snapshot save | verify | list | restore``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
from ._backend import opened
from ._common import (
    DataDir,
    JsonFlag,
    NoServer,
    RedisUrl,
    Server,
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


def _describe(info: snap.SnapshotInfo, verb: str) -> None:
    console.print(
        f"{verb} {info.path}: format {info.format}, created {info.created_at.isoformat()}, "
        f"{info.size:,} bytes, {len(info.tenants)} tenant(s), {info.keys:,} keys, "
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


@snapshot_app.command("verify")
def verify_cmd(file: File, as_json: JsonFlag = False, server: NoServer = None) -> None:
    """Check a snapshot's format, checksum and contents; print what it holds."""
    refuse_server(server, "snapshot verify checks a local file")

    async def go() -> snap.SnapshotInfo:
        return snap.verify(file)

    info = run(go(), as_json=as_json)
    if as_json:
        print_json(info)
    else:
        _describe(info, "OK")


@snapshot_app.command("list")
def list_cmd(
    directory: SnapshotDir = None,
    as_json: JsonFlag = False,
    data_dir: DataDir = None,
    server: NoServer = None,
) -> None:
    """List snapshot files, oldest first (footers only: `verify` checks one)."""
    refuse_server(server, "snapshot list reads a local directory")

    async def go() -> tuple[Path, list[snap.SnapshotInfo]]:
        where = directory or _settings(None, data_dir).data_dir / "snapshots"
        return where, snap.list_snapshots(where)

    where, found = run(go(), as_json=as_json)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print(f"no snapshots in {where}", highlight=False)
        return
    table = Table()
    table.add_column("file (created at, UTC)", no_wrap=True)
    for name in ("tenants", "keys", "versions", "bytes"):
        table.add_column(name, justify="right")
    for info in found:
        table.add_row(Path(info.path).name, str(len(info.tenants)),
                      f"{info.keys:,}", f"{info.versions:,}", f"{info.size:,}")  # fmt: skip
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
