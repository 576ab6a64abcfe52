"""CLI: ``kvconf diff``: what changed in a tenant or namespace between two revisions."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

from ..schema import mask_value
from ..timeline import KeyState, diff
from ._common import (
    DataDir,
    JsonFlag,
    RedisUrl,
    ShowSecrets,
    console,
    opened_store,
    print_json,
    run,
    settings,
)


def _shown(state: KeyState | None, value: Any) -> str:
    if state is None:
        return "-"
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return f"{text} (v{state.version})"


def diff_command(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    namespace: Annotated[
        str | None, typer.Argument(help="Namespace (omit for the whole tenant).")
    ] = None,
    from_revision: Annotated[int, typer.Option("--from", min=0, help="Older revision.")] = 0,
    to_revision: Annotated[
        int | None, typer.Option("--to", min=0, help="Newer revision (default: now).")
    ] = None,
    show_secrets: ShowSecrets = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Show every key that differs between two revisions (added, removed, changed)."""

    async def go() -> None:
        async with opened_store(settings(redis_url, data_dir)) as store:
            result = await diff(store, tenant, from_revision, to_revision, namespace=namespace)
            specs = {
                ns: await store.specs(tenant, ns) for ns in {c.namespace for c in result.changes}
            }

        def mask(ns: str, key: str, state: KeyState | None) -> Any:
            if state is None or show_secrets:
                return None if state is None else state.value
            return mask_value(state.value, specs[ns].get(key))

        rows = [
            {"namespace": c.namespace, "key": c.key, "change": c.change,
             "old": mask(c.namespace, c.key, c.old), "new": mask(c.namespace, c.key, c.new),
             "old_version": c.old.version if c.old else 0,
             "new_version": c.new.version if c.new else 0}
            for c in result.changes
        ]  # fmt: skip
        if as_json:
            print_json({"tenant": tenant, "namespace": namespace,
                        "from_revision": result.from_revision,
                        "to_revision": result.to_revision, "changes": rows})  # fmt: skip
            return
        table = Table(
            "namespace", "key", "change", "old", "new",
            title=f"{tenant}: revision {result.from_revision} → {result.to_revision}",
        )  # fmt: skip
        for c, row in zip(result.changes, rows, strict=True):
            table.add_row(
                c.namespace, c.key, c.change,
                _shown(c.old, row["old"]), _shown(c.new, row["new"]),
            )  # fmt: skip
        console.print(table)

    run(go(), as_json=as_json)


def register(app: typer.Typer) -> None:
    """Add ``diff`` to the ``kvconf`` app."""
    app.command("diff")(diff_command)
