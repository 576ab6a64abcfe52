"""CLI: ``kvconf bench``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from ._common import JsonFlag, NoServer, console, err_console, print_json, refuse_server

#: The sections of ``kvconf bench`` (kvconf.bench.SECTIONS; a test keeps them equal).
SECTIONS = ("store", "watch", "rest", "snapshot", "fleet")


def bench(
    only: Annotated[
        str | None,
        typer.Option("--only", help=f"Comma-separated sections of {','.join(SECTIONS)}."),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url", help="Real Redis to measure (default: a private redis-server)."
        ),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Smaller sizes, for a smoke run.")] = False,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=1024)] = 64,
    as_json: JsonFlag = False,
    server: NoServer = None,
) -> None:
    """Measure kvconf against raw baselines in the same run; print ratios."""
    refuse_server(server, "kvconf bench measures its own servers (a private redis-server)")
    from ..bench import BenchContext, private_redis, run_sections  # only this command needs it

    names = [n.strip() for n in only.split(",")] if only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        err_console.print(f"error: unknown section(s) {', '.join(unknown)}")
        raise typer.Exit(5)
    log = (lambda _msg: None) if as_json else (lambda msg: err_console.print(msg))

    def go(url: str) -> dict[str, list]:  # type: ignore[type-arg]
        ctx = BenchContext(redis_url=url, quick=quick, concurrency=concurrency, log=log)
        return asyncio.run(run_sections(ctx, names))

    if redis_url is None:
        with private_redis() as url:
            results = go(url)
    else:
        results = go(redis_url)
    if as_json:
        print_json({"sections": results, "ok": all(f.ok for fs in results.values() for f in fs)})
        return
    table = Table("section", "figure", "value", "baseline", "ratio", "goal", "ok")
    for section, figures in results.items():
        for f in figures:
            baseline = f"{f.baseline:,.1f} ({f.baseline_name})"
            table.add_row(
                section, f.name, f"{f.value:,.1f} {f.unit}", baseline,
                f"{f.ratio:.2f}x", f.goal, "yes" if f.ok else "NO",
            )  # fmt: skip
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the ``kvconf`` app."""
    app.command()(bench)
