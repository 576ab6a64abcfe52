"""CLI: ``kvconf export`` and ``kvconf import`` (JSON, YAML, ``.env``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from .. import io
from ..exceptions import InvalidInput
from ._backend import opened
from ._common import (
    DataDir,
    JsonFlag,
    RedisUrl,
    Server,
    Token,
    console,
    err_console,
    print_json,
    report_table,
    run,
    target,
)

FormatOpt = Annotated[
    str | None,
    typer.Option("--format", "-f", help="json, yaml or env (default: from the file name)."),
]


def _format(fmt: str | None, name: str) -> io.Format:
    chosen = fmt or io.detect_format(name)
    if chosen not in ("json", "yaml", "env"):
        raise InvalidInput(f"--format must be json, yaml or env, not {chosen!r}")
    return chosen  # type: ignore[return-value]


def _read(file: str) -> str:
    try:
        return sys.stdin.read() if file == "-" else Path(file).read_text("utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {file}: {exc.strerror}") from None


def export(
    tenant: Annotated[str, typer.Argument(help="Tenant to export.")],
    namespace: Annotated[str | None, typer.Argument(help="Only this namespace.")] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    fmt: FormatOpt = None,
    prefix: Annotated[str, typer.Option("--prefix", help=".env: variable name prefix.")] = "",
    no_schemas: Annotated[
        bool, typer.Option("--no-schemas", help="JSON/YAML: leave schemas out.")
    ] = False,
    include_history: Annotated[
        bool,
        typer.Option(
            "--include-history",
            help="JSON/YAML: each key's kept versions (for import --preserve-versions).",
        ),
    ] = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Export a tenant or one namespace as JSON, YAML or a .env file (values unmasked).

    JSON and YAML carry the schemas (with ``sensitive``), so an import keeps
    secrets masked.
    """

    where = target(redis_url, data_dir, server, token)

    async def go() -> str:
        chosen = _format(fmt, str(output) if output else "")
        if include_history and chosen == "env":
            raise InvalidInput("--include-history needs JSON or YAML")
        async with opened(where) as backend:
            doc = await io.export_tenant(
                backend.store, tenant, namespace, schemas=not no_schemas, history=include_history
            )
        return io.dumps(doc, chosen, prefix=prefix)

    text = run(go())
    if output is None:
        sys.stdout.write(text)
        return
    # Created 0600 from the start: an export holds unmasked values.
    try:
        handle = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(handle, 0o600)  # an existing file keeps its mode under O_CREAT
        with os.fdopen(handle, "w", encoding="utf-8") as fd:
            fd.write(text)
    except OSError as exc:
        err_console.print(
            f"[red]error:[/red] cannot write {output}: {exc.strerror}", highlight=False
        )
        raise typer.Exit(5) from None


def import_(
    tenant: Annotated[str, typer.Argument(help="Tenant to import into (created if missing).")],
    file: Annotated[str, typer.Argument(help="File to read, or - for stdin.")],
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Namespace the file's keys go to.")
    ] = None,
    fmt: FormatOpt = None,
    prefix: Annotated[
        str, typer.Option("--prefix", help=".env: only names with this prefix (stripped).")
    ] = "",
    keep_case: Annotated[
        bool, typer.Option("--keep-case", help=".env: keep names as written (default: lower).")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report only.")] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict", help="Make each namespace match the file: delete keys the file lacks."
        ),
    ] = False,
    preserve_versions: Annotated[
        bool,
        typer.Option(
            "--preserve-versions",
            help="Keep each key's versions and timestamps (an export with --include-history).",
        ),
    ] = False,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="--preserve-versions: overwrite keys the tenant has."),
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Kept in the audit trail.")] = "",
    actor: Annotated[str | None, typer.Option("--actor", envvar="KVCONF_ACTOR")] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Import keys from JSON, YAML or .env: validated whole, one change set per namespace.

    An export's schemas are set first. ``--strict`` makes each namespace of
    the file match it (keys the file lacks are deleted) and prints the diff
    before it writes. ``--preserve-versions`` writes each
    key's exported versions as they were (refused for keys the tenant already
    has, unless ``--replace``).
    """

    where = target(redis_url, data_dir, server, token)

    async def go() -> io.ImportReport | io.HistoryImport:
        chosen = _format(fmt, file if file != "-" else "")
        if replace and not preserve_versions:
            raise InvalidInput("--replace goes with --preserve-versions")
        if strict and preserve_versions:
            raise InvalidInput("--strict does not go with --preserve-versions")
        text = _read(file)
        doc = io.load_document(
            text, chosen, namespace=namespace, prefix=prefix, keep_case=keep_case
        )
        async with opened(where) as backend:
            store = backend.store
            if preserve_versions:
                return await backend.import_history(
                    tenant, doc, replace=replace, dry_run=dry_run, actor=actor, reason=reason
                )
            if strict and not dry_run:  # the diff first, then the write
                preview = await io.import_values(
                    store, tenant, doc.namespaces, texts=chosen == "env", dry_run=True,
                    schemas=doc.schemas, strict=True,
                )  # fmt: skip
                if not as_json:
                    _print_diff(preview)
            return await io.import_values(
                store, tenant, doc.namespaces, texts=chosen == "env", dry_run=dry_run,
                actor=actor, reason=reason, schemas=doc.schemas, strict=strict,
            )  # fmt: skip

    report = run(go(), as_json=as_json)
    if isinstance(report, io.HistoryImport):
        if as_json:
            print_json(report)
            return
        if report.dry_run:
            console.print("dry run: nothing was written", style="yellow")
        at = "" if report.revision is None else f" at revision {report.revision}"
        console.print(
            f"{report.keys} keys, {report.versions} versions{at}"
            + (f"; replaced {len(report.replaced)}" if report.replaced else ""),
            highlight=False,
        )
        return
    if report.dry_run and strict and not as_json:
        _print_diff(report)
    columns = ("namespace", "written", "deleted", "unchanged", "revision")
    table = report_table(report, as_json, columns, {"namespace"})
    if table is None:
        return
    for row in report.namespaces:
        table.add_row(row.namespace, str(row.written), str(row.deleted), str(row.unchanged),
                      "-" if row.revision is None else str(row.revision))  # fmt: skip
    console.print(table)


_SIGNS = {"added": "+", "changed": "~", "removed": "-"}


def _print_diff(report: io.ImportReport) -> None:
    """One line per key the import writes or deletes (names only, never values)."""
    for row in report.namespaces:
        for key, change in row.diff.items():
            err_console.print(f"{_SIGNS[change]} {row.namespace}/{key} ({change})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``import`` to the ``kvconf`` app."""
    app.command("export")(export)
    app.command("import")(import_)
