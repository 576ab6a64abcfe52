"""CLI: ``kvconf token create|list|revoke``: the REST API's bearer tokens, from a shell.

Tokens live in the same Redis as the data (:mod:`kvconf.tokens`); the CLI
itself needs none when it talks to Redis directly. Through a server
(``--server``) it uses ``/api/v1/tokens`` and may grant only rights its own
token holds. The token text is printed once, at creation; only its SHA-256 is
stored.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..exceptions import InvalidInput
from ._backend import Backend, with_backend
from ._common import DataDir, JsonFlag, RedisUrl, Server, Token, target
from ._data import Actor
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
    server: Server = None,
    token: Token = None,
) -> None:
    """Create a token and print it (the only time it is shown)."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        grants = _grants(grant)
        text = await backend.create_token(name, grants, actor)
        if fmt is Format.table:
            line(text)
        else:
            emit(fmt, {"name": name, "token": text, "grants": grants}, values=[text])

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


@token_app.command("list")
def list_(
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Every token's name, grants and creation (never the token text)."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        records = await backend.tokens()

        def shown(grants: dict[str, list[str]]) -> str:
            return " ".join(f"{t}={','.join(r)}" for t, r in sorted(grants.items()))

        emit(fmt, records, columns=("name", "grants", "created_at", "created_by"),
             rows=[(r.name, shown(r.grants), r.created_at, r.created_by) for r in records],
             values=[r.name for r in records])  # fmt: skip

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


@token_app.command("revoke")
def revoke(
    name: Name,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Revoke a token (servers stop accepting it within 2 s)."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        await backend.revoke_token(name)
        if fmt is Format.table:
            line(f"revoked {name}")
        else:
            emit(fmt, {"name": name, "revoked": True}, values=[name])

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


def register(app: typer.Typer) -> None:
    """Add ``token`` to the ``kvconf`` app."""
    app.add_typer(token_app)
