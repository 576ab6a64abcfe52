"""CLI: ``diff`` (revisions, or two namespaces across tenants), ``promote``, ``log``, ``fleet``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import typer

from ..compare import compare, parse_side, promote
from ..schema import mask_value
from ..store import Store
from ..timeline import KeyState
from . import _preview
from ._backend import Backend, with_backend, with_store
from ._common import DataDir, JsonFlag, RedisUrl, Server, ShowSecrets, Target, Token, target
from ._data import Actor, DryRun, Reason
from ._output import Format, OutputOption, choose, emit, line, run, text


def _shown(state: KeyState | None, value: Any) -> str:
    if state is None:
        return "-"
    return f"{text(value)} (v{state.version})"


def diff_command(
    tenant: Annotated[
        str, typer.Argument(help="Tenant, or TENANT/NAMESPACE to compare with OTHER.")
    ],
    namespace: Annotated[
        str | None,
        typer.Argument(help="Namespace (omit for the whole tenant), or OTHER/NAMESPACE."),
    ] = None,
    from_revision: Annotated[int, typer.Option("--from", min=0, help="Older revision.")] = 0,
    to_revision: Annotated[
        int | None, typer.Option("--to", min=0, help="Newer revision (default: now).")
    ] = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Show the keys that differ between two revisions, or between two namespaces.

    \b
    kvconf diff acme --from 10 [--to 12]        a tenant between revisions
    kvconf diff acme ai-12 --from 10            one namespace between revisions
    kvconf diff staging/ai-12 acme/ai-12        two namespaces now (across tenants)
    """
    fmt = choose(output, as_json)
    if "/" in tenant:
        if namespace is None or "/" not in namespace:
            raise typer.BadParameter("comparing namespaces needs TENANT/NS OTHER/NS")
        _compare(tenant, namespace, show_secrets, fmt, target(redis_url, data_dir, server, token))
        return

    async def go(backend: Backend) -> None:
        store = backend.store
        result = await backend.diff(tenant, from_revision, to_revision, namespace)
        specs = {ns: await store.specs(tenant, ns) for ns in {c.namespace for c in result.changes}}

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
        emit(
            fmt,
            {"tenant": tenant, "namespace": namespace, "from_revision": result.from_revision,
             "to_revision": result.to_revision, "changes": rows},
            columns=("namespace", "key", "change", "old", "new"),
            rows=[(c.namespace, c.key, c.change, _shown(c.old, r["old"]), _shown(c.new, r["new"]))
                  for c, r in zip(result.changes, rows, strict=True)],
            values=[r["new"] for r in rows if r["change"] != "removed"],
            title=f"{tenant}: revision {result.from_revision} → {result.to_revision}",
        )  # fmt: skip

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


async def _masker(store: Store, tenant: str, ns: str, show: bool) -> Callable[[str, Any], Any]:
    specs = {} if show else await store.specs(tenant, ns)
    return lambda key, value: mask_value(value, specs.get(key))


def _compare(left: str, right: str, show_secrets: bool, fmt: Format, where: Target) -> None:
    async def go(store: Store) -> None:
        (lt, ln), (rt, rn) = parse_side(left), parse_side(right)
        result = await compare(store, lt, ln, rt, rn)
        lmask = await _masker(store, lt, ln, show_secrets)
        rmask = await _masker(store, rt, rn, show_secrets)
        rows = [
            {**msgspec.to_builtins(d),
             "left": lmask(d.key, d.left) if d.left_version else None,
             "right": rmask(d.key, d.right) if d.right_version else None}
            for d in result.differences
        ]  # fmt: skip

        def cell(row: dict[str, Any], side: str) -> str:
            version = row[f"{side}_version"]
            return f"{text(row[side])} (v{version})" if version else "-"

        emit(
            fmt,
            {"left": result.left, "right": result.right, "same": result.same,
             "differences": rows},
            columns=("key", "change", result.left, result.right),
            rows=[(r["key"], r["change"], cell(r, "left"), cell(r, "right")) for r in rows],
            values=[r["key"] for r in rows],
            title=f"{result.left} vs {result.right}: {len(rows)} differ, {result.same} same",
        )  # fmt: skip

    run(with_store(where, go), fmt)


def promote_command(
    source: Annotated[str, typer.Argument(help="SOURCE_TENANT/NAMESPACE to copy from.")],
    destination: Annotated[str, typer.Argument(help="DEST_TENANT/NAMESPACE to change.")],
    keys: Annotated[
        str | None, typer.Option("--keys", help="Only these keys (comma-separated).")
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also delete keys only the destination has.")
    ] = False,
    dry_run: DryRun = False,
    reason: Reason = "",
    actor: Actor = None,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Copy the keys that differ from SOURCE to DESTINATION as one change set.

    Compare-and-set on every key it touches: a concurrent write to the
    destination fails it whole (exit 4). ``--dry-run`` prints the diff only.
    """
    fmt = choose(output, as_json)
    wanted = None if keys is None else [k.strip() for k in keys.split(",") if k.strip()]

    async def go(store: Store) -> None:
        (st, sn), (dt, dn) = parse_side(source), parse_side(destination)
        current = await store.get_namespace(dt, dn) if await store.exists(dt) else {}
        promo = await promote(
            store, st, sn, dt, dn, keys=wanted, prune=prune, dry_run=dry_run,
            actor=actor, reason=reason,
        )  # fmt: skip
        plan = promo.plan
        specs = await store.specs(st, sn)
        rows = _preview.changes(dn, current, plan.values, plan.deletes, specs, show_secrets)
        if dry_run:
            _preview.show(fmt, dt, rows, source=promo.source, destination=promo.destination)
            return
        result = promo.result
        if fmt is not Format.table:
            emit(fmt, {"source": promo.source, "destination": promo.destination,
                       "revision": None if result is None else result.revision,
                       "changes": rows}, values=[r["key"] for r in rows])  # fmt: skip
        elif result is None:
            line(f"nothing to promote: {promo.destination} already matches {promo.source}")
        else:
            line(f"revision {result.revision} of {dt}: promoted {len(rows)} key(s) "
                 f"from {promo.source} to {promo.destination}")  # fmt: skip

    run(with_store(target(redis_url, data_dir, server, token), go), fmt)


def log(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    since: Annotated[int, typer.Option("--since", min=0, help="Records after this revision.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    show_secrets: ShowSecrets = False,
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """The tenant's change log after a revision, oldest first (one record per revision)."""
    fmt = choose(output, as_json)

    async def go(backend: Backend) -> None:
        store = backend.store
        events = await backend.read_log(tenant, since, limit)
        specs: dict[str, Any] = {}
        docs = []
        for event in events:
            doc = msgspec.to_builtins(event)
            for change, raw in zip(doc["changes"], event.changes, strict=True):
                ns = event.namespace_of(raw)
                if ns not in specs:
                    specs[ns] = {} if show_secrets else await store.specs(tenant, ns)
                if not raw.deleted:
                    change["value"] = mask_value(raw.value, specs[ns].get(raw.key))
            docs.append(doc)

        def summary(doc: dict[str, Any]) -> str:
            return " ".join(
                f"-{c['key']}" if c["deleted"] else f"{c['key']}={text(c['value'])}"
                for c in doc["changes"]
            )

        emit(fmt, docs,
             columns=("revision", "type", "namespace", "changes", "actor", "reason", "ts"),
             rows=[(str(d["revision"]), d["type"], d["namespace"], summary(d), d["actor"],
                    d["reason"], d["ts"]) for d in docs],
             values=[d["revision"] for d in docs])  # fmt: skip

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


def fleet_command(
    tenant: Annotated[str, typer.Argument(help="Tenant name.")],
    output: OutputOption = None,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Which watcher instances follow the tenant, and the revision each applied."""
    fmt = choose(output, as_json)

    def when(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")

    async def go(backend: Backend) -> None:
        members = await backend.fleet(tenant)  # an unknown tenant is exit 3, not an empty fleet
        emit(fmt, members,
             columns=("instance", "host", "pid", "revision", "stale", "reported_at",
                      "namespaces"),
             rows=[(m.instance, m.host, str(m.pid), str(m.revision), str(m.stale).lower(),
                    when(m.reported_at), ",".join(m.namespaces) or "*") for m in members],
             values=[m.instance for m in members])  # fmt: skip

    run(with_backend(target(redis_url, data_dir, server, token), go), fmt)


def register(app: typer.Typer) -> None:
    """Add ``diff``, ``promote``, ``log`` and ``fleet`` to the ``kvconf`` app."""
    app.command("diff")(diff_command)
    app.command("promote")(promote_command)
    app.command()(log)
    app.command("fleet")(fleet_command)
