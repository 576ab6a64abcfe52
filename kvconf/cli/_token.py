"""CLI: ``kvconf token create|list|revoke``: the REST API's bearer tokens, from a shell.

Tokens live in the same Redis as the data (:mod:`kvconf.tokens`); the CLI
itself needs none (it talks to Redis directly). The token text is printed
once, at creation; only its SHA-256 is stored.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..exceptions import InvalidInput
from ..store import Store
from ..tokens import Tokens
from ._common import DataDir, JsonFlag, RedisUrl
from ._data import Actor, with_store
from ._output import Format, OutputOption, choose, emit, line, run

token_app = typer.Typer(
    name="token", help="Create, list and revoke the REST API's bearer tokens.", no_args_is_help=True
)
Name = Annotated[str, typer.Argument(help="Token name.")]


def _grants(items: list[str]) -> dict[str, list[str]]:
    grants: dict[str, list[str]] = {}
    for item in items:
        tenant, sep, rights = item.partition("=")
        if not sep or not tenant:
            raise InvalidInput(f"--grant wants TENANT=RIGHT[,RIGHT], got {item!r}", field="grant")
        grants.setdefault(tenant, []).extend(r.strip() for r in rights.split(",") if r.strip())
    return grants


@token_app.command("create")
def create(
    name: Name,
    grant: Annotated[
        list[str],
        typer.Option(
            "--grant",
            help="TENANT=RIGHTS, rights among read, write, admin, secrets ('*': every tenant); "
            "repeatable.",
        ),
    ],
    actor: Actor = None,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create a token and print it (the only time it is shown)."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        grants = _grants(grant)
        text, _ = await Tokens(store.redis).create(name, grants, actor or store.settings.actor)
        if fmt is Format.table:
            line(text)
        else:
            emit(fmt, {"name": name, "token": text, "grants": grants}, values=[text])

    run(with_store(redis_url, data_dir, go), fmt)


@token_app.command("list")
def list_(
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Every token's name, grants and creation (never the token text)."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        records = await Tokens(store.redis).list()

        def shown(grants: dict[str, list[str]]) -> str:
            return " ".join(f"{t}={','.join(r)}" for t, r in sorted(grants.items()))

        emit(fmt, records, columns=("name", "grants", "created_at", "created_by"),
             rows=[(r.name, shown(r.grants), r.created_at, r.created_by) for r in records],
             values=[r.name for r in records])  # fmt: skip

    run(with_store(redis_url, data_dir, go), fmt)


@token_app.command("revoke")
def revoke(
    name: Name,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke a token (servers stop accepting it within 2 s)."""
    fmt = choose(output, as_json)

    async def go(store: Store) -> None:
        await Tokens(store.redis).revoke(name)
        if fmt is Format.table:
            line(f"revoked {name}")
        else:
            emit(fmt, {"name": name, "revoked": True}, values=[name])

    run(with_store(redis_url, data_dir, go), fmt)


def register(app: typer.Typer) -> None:
    """Add ``token`` to the ``kvconf`` app."""
    app.add_typer(token_app)
