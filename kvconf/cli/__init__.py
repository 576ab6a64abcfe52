"""The ``kvconf`` command: every surface of kvconf from a shell.

Sub-command modules register themselves on :data:`app`; each is one concern:
``_data`` (get/set/delete/history/rollback/schema), ``_tenant`` (tenant
list/info/create/clone/delete/undelete, and ``tenants``), ``_timeline``
(diff, promote, log, fleet), ``_watch``, ``_token`` (token create/list/revoke),
``_serve``, ``_snapshot`` (snapshot save/verify/list/restore), ``_io``
(import/export), ``_apply`` (a change set across namespaces), ``_bench``,
``_stats``. ``_output`` prints every read command's ``-o table|json|yaml|value``;
``_values`` parses typed values; ``_preview`` prints the diff of a ``--dry-run``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__
from . import (
    _apply,
    _bench,
    _data,
    _io,
    _serve,
    _snapshot,
    _stats,
    _tenant,
    _timeline,
    _token,
    _watch,
)

__all__ = ["app", "main"]

#: Shown under ``kvconf --help``: where commands work, and the exit statuses.
_EPILOG = (
    "Every command works on Redis (--redis-url), on the embedded store (--data-dir; through "
    "the `kvconf serve` that owns it, if one does), or only through a kvconf server's REST "
    "API (--server URL --token T, or KVCONF_SERVER and KVCONF_TOKEN). serve, bench and "
    "snapshot recover work locally only: --server makes them exit 2.\n\n"
    "Exit statuses: 0 ok, 1 unexpected error, 2 usage, 3 not found, 4 conflict, 5 invalid "
    "input, 6 unavailable, 7 snapshot unusable, 8 unauthorized (token refused or missing), "
    "9 forbidden (the token lacks the right)."
)

app = typer.Typer(
    name="kvconf",
    help="Multi-tenant, versioned configuration store on Redis with hot reload.",
    epilog=_EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kvconf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Multi-tenant, versioned configuration store on Redis with hot reload."""


for _module in (
    _data, _apply, _tenant, _timeline, _watch, _token, _serve, _snapshot, _io, _bench, _stats,
):  # fmt: skip
    _module.register(app)


def main() -> None:
    """Entry point of the ``kvconf`` console script."""
    app()
