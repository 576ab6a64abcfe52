"""Every REST operation has a CLI command: the list comes from the app's OpenAPI document.

A new route without an entry in :data:`CLI_FOR` fails this test, and so does
an entry naming a command the ``kvconf`` app does not have.
"""

from __future__ import annotations

import typer
from typer.main import get_command

from kvconf import Settings
from kvconf.api.app import create_app
from kvconf.cli import app

T = "/api/v1/tenants/{tenant}"
NS = f"{T}/namespaces/{{namespace}}"
KEY = f"{NS}/keys/{{key}}"

#: (method, path) -> the CLI command doing the same ("serve" for the server's own endpoints).
CLI_FOR: dict[tuple[str, str], str] = {
    ("GET", KEY): "get",
    ("PUT", KEY): "set",
    ("DELETE", KEY): "delete",
    ("GET", f"{T}/namespaces"): "tenant info",  # lists the namespaces
    ("GET", NS): "get",
    ("POST", NS): "set",  # one change set of a namespace (set and delete)
    ("GET", f"{NS}/effective"): "get",  # get --effective
    ("GET", f"{KEY}/history"): "history",
    ("POST", f"{KEY}/rollback"): "rollback",
    ("GET", f"{T}/log"): "log",
    ("GET", f"{T}/diff"): "diff",
    ("GET", f"{NS}/diff"): "diff",
    ("POST", f"{T}/rollback"): "rollback",  # rollback TENANT [NS] --to-revision R
    ("POST", f"{T}/changes"): "apply",  # a change set across namespaces (and --dry-run)
    ("GET", f"{T}/schemas"): "schema",  # schema TENANT
    ("GET", f"{NS}/schema"): "schema",
    ("PUT", f"{NS}/schema"): "schema",  # schema --set
    ("DELETE", f"{NS}/schema"): "schema",  # schema --remove
    ("GET", f"{T}/watch"): "watch",
    ("GET", f"{T}/fleet"): "fleet",
    ("GET", "/api/v1/stats"): "stats",
    ("GET", f"{T}/state"): "watch",  # watch prints the state first (--changes-only skips it)
    ("GET", f"{T}/stats"): "stats",  # stats TENANT
    ("POST", f"{T}/snapshots/{{name}}/verify"): "snapshot verify",
    ("GET", "/api/v1/tenants"): "tenant list",
    ("POST", "/api/v1/tenants"): "tenant create",  # and tenant clone
    ("GET", T): "tenant info",
    ("DELETE", T): "tenant delete",
    ("POST", f"{T}/undelete"): "tenant undelete",
    ("GET", f"{T}/snapshots"): "snapshot list",
    ("POST", f"{T}/snapshots"): "snapshot save",
    ("POST", f"{T}/snapshots/{{name}}/restore"): "snapshot restore",
    ("GET", "/api/v1/compare"): "diff",  # diff TENANT/NS OTHER/NS
    # The CloudBrain view is tenant "default", namespace "ai-<id>".
    ("GET", "/api/v1/config/{ai_id}"): "get",
    ("PUT", "/api/v1/config/{ai_id}"): "set",
    ("GET", "/api/v1/config/{ai_id}/{key}"): "get",
    ("PUT", "/api/v1/config/{ai_id}/{key}"): "set",
    # The server's own endpoints: served by `kvconf serve`, nothing to do from a shell.
    ("GET", "/healthz"): "serve",
    ("GET", "/readyz"): "serve",
    ("GET", "/metrics"): "serve",
    ("GET", "/api/v1/tokens/me"): "token list",  # the CLI needs no token: it lists them all
    ("GET", "/api/v1/tokens"): "token list",
    ("POST", "/api/v1/tokens"): "token create",
    ("DELETE", "/api/v1/tokens/{name}"): "token revoke",
}


def _operations() -> set[tuple[str, str]]:
    doc = create_app(Settings(redis_url="memory://coverage")).openapi()
    return {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}


def _commands(typer_app: typer.Typer) -> set[str]:
    root = get_command(typer_app)
    found: set[str] = set()

    def walk(group: object, prefix: str) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            full = f"{prefix}{name}"
            found.add(full)
            walk(cmd, f"{full} ")

    walk(root, "")
    return found


def test_every_rest_operation_has_a_cli_command() -> None:
    operations = _operations()
    unmapped = sorted(operations - set(CLI_FOR))
    assert not unmapped, f"REST operations without a CLI command: {unmapped}"
    stale = sorted(set(CLI_FOR) - operations)
    assert not stale, f"mapped operations the API no longer has: {stale}"
    commands = _commands(app)
    missing = sorted({c for c in CLI_FOR.values() if c not in commands})
    assert not missing, f"mapped to commands kvconf does not have: {missing}"


def test_the_walk_sees_sub_commands() -> None:
    commands = _commands(app)
    for name in ("tenant create", "tenant clone", "snapshot restore", "promote", "log"):
        assert name in commands
    assert "no-such" not in commands
