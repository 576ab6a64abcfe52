"""What every sub-command shares: connection options, output, exit statuses.

Exit statuses: 0 success, 1 unexpected error, 2 usage error, 3 not found,
4 conflict, 5 invalid input, 6 unavailable, 7 snapshot unusable.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..exceptions import Conflict, InvalidInput, KvconfError, NotFound, SnapshotError, Unavailable
from ..store import Store

T = TypeVar("T")

EXIT_CODES: dict[type[KvconfError], int] = {
    NotFound: 3,
    Conflict: 4,
    InvalidInput: 5,
    Unavailable: 6,
    SnapshotError: 7,
}

console = Console()
err_console = Console(stderr=True)

RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="KVCONF_REDIS_URL",
        help="Redis URL (redis://, rediss://, redis+cluster://); unset: embedded default.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="KVCONF_DATA_DIR", help="Data directory (embedded mode, snapshots)."
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
ShowSecrets = Annotated[
    bool, typer.Option("--show-secrets", help="Print values of sensitive keys unmasked.")
]


def exit_code(exc: KvconfError) -> int:
    """The exit status of a kvconf error (walks the class hierarchy)."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def settings(redis_url: str | None, data_dir: Path | None, **overrides: Any) -> Settings:
    """Settings from the environment, overridden by the command's flags."""
    return Settings.from_env(redis_url=redis_url, data_dir=data_dir, **overrides)


def run(coro: Coroutine[Any, Any, T], *, as_json: bool = False) -> T:
    """Run a command's coroutine; turn kvconf errors into a message and exit status."""
    try:
        try:
            return asyncio.run(coro)
        except RedisError as exc:  # a path the store boundary missed: still exit 6
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
    except KvconfError as exc:
        if as_json:
            sys.stdout.write(msgspec.json.encode({"error": exc.to_dict()}).decode() + "\n")
        else:
            err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(exit_code(exc)) from None


def report_table(
    report: Any, as_json: bool, columns: Sequence[str], no_wrap: Collection[str] = ()
) -> Table | None:
    """Show a write report: as JSON (returns None), or a dry-run banner and an empty table."""
    if as_json:
        print_json(report)
        return None
    if report.dry_run:
        console.print("dry run: nothing was written", style="yellow")
    table = Table()
    for name in columns:
        table.add_column(name, no_wrap=name in no_wrap)
    return table


def print_json(obj: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(msgspec.json.encode(msgspec.to_builtins(obj)).decode() + "\n")
    sys.stdout.flush()


@asynccontextmanager
async def opened_store(cfg: Settings) -> AsyncIterator[Store]:
    """A Store for the length of a command, closed afterwards."""
    store = await open_store(cfg)
    try:
        yield store
    finally:
        await store.aclose()


async def open_store(cfg: Settings) -> Store:
    """A Store for a command (embedded: loaded from the data dir when it has state)."""
    from .._snapshot.embedded import open_embedded_store

    if cfg.redis_url is None:
        return await open_embedded_store(cfg)
    return Store(settings=cfg)
