"""What every sub-command shares: connection options, output, exit statuses.

Exit statuses: 0 success, 1 unexpected error, 2 usage error (also: ``--server``
given to a command that works only locally), 3 not found, 4 conflict,
5 invalid input, 6 unavailable, 7 snapshot unusable, 8 unauthorized (a kvconf
server refused the token: none, unknown or expired), 9 forbidden (the token
lacks the right).

Where a command works is decided in one place, :func:`target`: a kvconf server
(``--server``/``KVCONF_SERVER``, the REST API only) or Redis / the embedded
store. :func:`kvconf.cli._backend.opened` then opens it, and goes through the
``kvconf serve`` that owns an embedded data dir by itself.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..exceptions import (
    Conflict,
    Forbidden,
    InvalidInput,
    KvconfError,
    NotFound,
    SnapshotError,
    Unauthorized,
    Unavailable,
)
from ..store import Store

T = TypeVar("T")

EXIT_CODES: dict[type[KvconfError], int] = {
    NotFound: 3,
    Conflict: 4,
    InvalidInput: 5,
    Unavailable: 6,
    SnapshotError: 7,
    Unauthorized: 8,
    Forbidden: 9,
}

console = Console()
err_console = Console(stderr=True)

RedisUrl = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis URL (redis://, rediss://, redis+cluster://; env KVCONF_REDIS_URL); "
        "unset: embedded default.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="KVCONF_DATA_DIR", help="Data directory (embedded mode, snapshots)."
    ),
]
Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="URL of a `kvconf serve` (http://, https://; env KVCONF_SERVER): work only "
        "through its REST API.",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="KVCONF_TOKEN",
        help="Bearer token for --server (or for the `kvconf serve` owning the data dir).",
        show_default=False,
    ),
]
NoServer = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Refused (exit 2): this command works only locally, never through a server.",
        show_default=False,
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


@dataclass(frozen=True)
class Target:
    """Where a command works: a kvconf server (``server``), else Redis or the embedded store."""

    redis_url: str | None = None
    data_dir: Path | None = None
    server: str | None = None
    token: str | None = None


def target(
    redis_url: str | None, data_dir: Path | None, server: str | None, token: str | None
) -> Target:
    """Decide where a command works (the one place that does).

    An explicit ``--server`` or ``--redis-url`` wins; then ``KVCONF_SERVER``,
    then ``KVCONF_REDIS_URL`` (as :class:`kvconf.Store` does); else the embedded
    store, reached through the ``kvconf serve`` that owns its data dir if one does.
    Neither option reads the environment itself, so a flag is always explicit.
    """
    if server is not None and redis_url is not None:
        raise typer.BadParameter("give --server or --redis-url, not both")
    if server is None and redis_url is None:
        server = os.environ.get("KVCONF_SERVER") or None
    if server is None:
        return Target(redis_url=redis_url, data_dir=data_dir, token=token or None)
    if not server.lower().startswith(("http://", "https://")):
        raise typer.BadParameter(
            f"--server (KVCONF_SERVER) must be an http:// or https:// URL, not {server!r}"
        )
    return Target(server=server, token=token or None)


def refuse_server(server: str | None, why: str) -> None:
    """Exit 2 when ``--server`` is given to a command that works only locally."""
    if server is not None:
        err_console.print(f"[red]error:[/red] --server: {why}", highlight=False)
        raise typer.Exit(2)


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
