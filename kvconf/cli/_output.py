"""How read commands print: ``-o table|json|yaml|value`` (``--json`` is ``-o json``).

``table`` is a rich table on a terminal; when stdout is not a terminal (a
pipe, a file, a test) it is plain tab-separated text with a header line, so
nothing is ever truncated or wrapped. ``value`` prints only the value(s), one
per line, for scripts (as ``etcdctl get --print-value-only``): strings raw,
everything else as compact JSON. ``yaml`` needs PyYAML (``kvconf[yaml]``).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Coroutine, Iterable, Sequence
from typing import Annotated, Any, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from ..exceptions import SchemaViolation
from ._common import err_console, exit_code
from ._common import run as common_run

__all__ = ["Format", "OutputOption", "choose", "emit", "line", "run", "text"]

T = TypeVar("T")


class Format(enum.StrEnum):
    """Output formats of read commands."""

    table = "table"
    json = "json"
    yaml = "yaml"
    value = "value"


OutputOption = Annotated[
    Format | None,
    typer.Option(
        "--output",
        "-o",
        help="table (default), json, yaml or value (only the values, for scripts).",
        case_sensitive=False,
    ),
]

#: Exit status when YAML output is asked for without PyYAML (invalid input).
EXIT_NO_YAML = 5


def choose(output: Format | None, as_json: bool) -> Format:
    """The format asked for: ``-o`` wins, ``--json`` means json, else table."""
    if output is not None:
        return output
    return Format.json if as_json else Format.table


def text(value: Any) -> str:
    """A value as one line of text: strings raw, anything else compact JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def line(message: str) -> None:
    """One line on stdout, never wrapped (messages that may hold long names)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _yaml_text(data: Any) -> str:
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        err_console.print(
            "[red]error:[/red] -o yaml needs PyYAML: pip install 'kvconf\\[yaml]' (or use -o json)",
            highlight=False,
        )
        raise typer.Exit(EXIT_NO_YAML) from None
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))


def emit(
    fmt: Format,
    data: Any,
    *,
    columns: Sequence[str] = (),
    rows: Iterable[Sequence[str]] = (),
    values: Iterable[Any] | None = None,
    title: str | None = None,
) -> None:
    """Print a read command's result in ``fmt``.

    ``data`` is what json and yaml print (anything msgspec can turn into
    builtins); ``columns``/``rows`` the table; ``values`` what ``-o value``
    prints, one per line (default: ``data`` itself).
    """
    if fmt is Format.json:
        line(msgspec.json.encode(msgspec.to_builtins(data)).decode())
        return
    if fmt is Format.yaml:
        sys.stdout.write(_yaml_text(msgspec.to_builtins(data)))
        sys.stdout.flush()
        return
    if fmt is Format.value:
        for value in [data] if values is None else values:
            line(text(value))
        return
    table_rows = [list(r) for r in rows]
    if not sys.stdout.isatty():
        # Pipes and files get every character: tab-separated, no wrapping.
        if title:
            line(f"# {title}")
        line("\t".join(columns))
        for row in table_rows:
            line("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row))
        return
    table = Table(title=title)
    for name in columns:
        # fold, never ellipsis: a value is shown whole even on a narrow terminal
        table.add_column(name, overflow="fold")
    for row in table_rows:
        table.add_row(*row)
    Console().print(table)


def run(coro: Coroutine[Any, Any, T], fmt: Format = Format.table) -> T:
    """Run a command's coroutine like :func:`._common.run`, listing every schema problem.

    A :class:`SchemaViolation` prints one line per problem on stderr (exit 5),
    so an operator sees every broken key at once; machine formats get the
    JSON error body, which carries the same ``problems``.
    """
    machine = fmt in (Format.json, Format.yaml)

    async def listing() -> T:
        try:
            return await coro
        except SchemaViolation as exc:
            if machine:
                raise
            for problem in exc.problems:
                err_console.print(
                    f"[red]error:[/red] {problem.key}: {problem.message}", highlight=False
                )
            raise typer.Exit(exit_code(exc)) from None

    return common_run(listing(), as_json=machine)
