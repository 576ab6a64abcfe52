"""The ``kvconf`` command: every surface of kvconf from a shell.

Sub-command modules register themselves on :data:`app`; each is one concern:
``_data`` (get/set/delete/history/rollback/tenants), ``_timeline`` (diff),
``_watch``, ``_serve``, ``_snapshot`` (snapshot save/verify/list/restore),
``_io`` (import/export), ``_bench``, ``_stats``.
"""

from __future__ import annotations

import typer

from . import _bench, _data, _io, _serve, _snapshot, _stats, _timeline, _watch

__all__ = ["app", "main"]

app = typer.Typer(
    name="kvconf",
    help="Multi-tenant, versioned configuration store on Redis with hot reload.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (_data, _timeline, _watch, _serve, _snapshot, _io, _bench, _stats):
    _module.register(app)


def main() -> None:
    """Entry point of the ``kvconf`` console script."""
    app()
