"""CLI: ``kvconf stats [TENANT]``, the size and activity figures of tenants."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..stats import TenantStats
from ._backend import opened
from ._common import DataDir, JsonFlag, RedisUrl, Server, Token, console, print_json, run, target

__all__ = ["register", "stats_command"]

_COLUMNS = ("revision", "namespaces", "keys", "versions", "log_entries", "schemas", "watchers")


def _memory(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _table(rows: list[TenantStats]) -> Table:
    # Short headings: the table fits an 80-column terminal.
    table = Table("tenant", "rev", "ns", "keys", "versions", "log", "schemas", "watchers", "memory")
    for row in rows:
        table.add_row(row.tenant, *(str(getattr(row, c)) for c in _COLUMNS),
                      _memory(row.memory_bytes))  # fmt: skip
    return table


def stats_command(
    tenant: Annotated[
        str | None, typer.Argument(help="One tenant (default: all, and totals).")
    ] = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Tenants, namespaces, keys, versions kept, log entries, schemas, watchers, memory.

    Memory (Redis ``MEMORY USAGE`` over the tenant's keys) is n/a on the
    embedded store.
    """

    where = target(redis_url, data_dir, server, token)

    async def go() -> None:
        async with opened(where) as backend:
            if tenant is not None:
                one = await backend.tenant_stats(tenant)
                if as_json:
                    print_json(one)
                    return
                console.print(f"tenant: {one.tenant}", highlight=False)
                for name in _COLUMNS:
                    console.print(f"{name}: {getattr(one, name)}", highlight=False)
                console.print(f"memory_bytes: {_memory(one.memory_bytes)}", highlight=False)
                return
            every = await backend.stats()
            if as_json:
                print_json(every)
                return
            console.print(_table(every.by_tenant))
            console.print(
                f"{every.tenants} tenants, {every.namespaces} namespaces, {every.keys} keys, "
                f"{every.versions} versions, {every.log_entries} log entries, "
                f"{every.schemas} schemas, {every.watchers} watchers, "
                f"memory {_memory(every.memory_bytes)} bytes"
            )

    run(go(), as_json=as_json)


def register(app: typer.Typer) -> None:
    """Add ``stats`` to the ``kvconf`` app."""
    app.command("stats")(stats_command)
