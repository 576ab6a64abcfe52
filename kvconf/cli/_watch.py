"""CLI: ``kvconf watch``: follow a tenant and print every applied change."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Annotated, Any

import msgspec
import typer

from ..schema import mask_value
from ..watcher import Change, Resync, Watcher
from ._backend import watching
from ._common import (
    DataDir,
    JsonFlag,
    RedisUrl,
    Server,
    ShowSecrets,
    Target,
    Token,
    print_json,
    run,
    target,
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _masked(watcher: Watcher, change: Change, show_secrets: bool) -> dict[str, Any]:
    body = change.to_json()
    if not show_secrets:
        specs = watcher.specs(change.namespace)
        for item in body["changes"]:
            spec = specs.get(item["key"])
            item["old"] = mask_value(item["old"], spec)
            item["new"] = mask_value(item["new"], spec)
    return body


def _state(watcher: Watcher, show_secrets: bool) -> list[dict[str, Any]]:
    """One ``state`` record per namespace: each key's value (masked) and version."""
    out = []
    for namespace, entries in sorted(watcher.entries().items()):
        specs = {} if show_secrets else watcher.specs(namespace)
        keys = {k: {"value": mask_value(e.value, specs.get(k)), "version": e.version}
                for k, e in sorted(entries.items())}  # fmt: skip
        out.append({"type": "state", "tenant": watcher.tenant, "namespace": namespace,
                    "revision": watcher.revision, "keys": keys})  # fmt: skip
    return out


def _describe(body: dict[str, Any]) -> str:
    parts = []
    for item in body["changes"]:
        if item["op"] == "added":
            parts.append(f"+{item['key']}={_text(item['new'])}")
        elif item["op"] == "changed":
            parts.append(f"~{item['key']}: {_text(item['old'])} -> {_text(item['new'])}")
        else:
            parts.append(f"-{item['key']}")
    tag = " (resync)" if body["resync"] else f" by {body['actor']}"
    reason = f": {body['reason']}" if body["reason"] and not body["resync"] else ""
    return f"rev {body['revision']} {body['namespace']} {' '.join(parts)}{tag}{reason}"


async def _watch(
    tenant: str,
    namespaces: list[str] | None,
    as_json: bool,
    show_secrets: bool,
    check_interval: float,
    where: Target,
    changes_only: bool = False,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with watching(
        where, tenant, namespaces=namespaces, check_interval=check_interval
    ) as watcher:

        def on_change(change: Change) -> None:
            body = _masked(watcher, change, show_secrets)
            if as_json:
                print_json({"type": "change", **body})
            else:
                _line(_describe(body))

        def on_resync(resync: Resync) -> None:
            if as_json:
                print_json({"type": "resync", **msgspec.to_builtins(resync)})
            else:
                names = ", ".join(resync.namespaces) or "no differences"
                _line(f"resync ({resync.reason}) at rev {resync.revision}: {names}")

        watcher.on_change(on_change)
        watcher.on_resync(on_resync)
        # No await from here to the end of the state: no change can slip in
        # between the state printed and the first change line.
        ready = {"type": "ready", "tenant": tenant, "revision": watcher.revision,
                 "epoch": watcher.epoch, "stale": watcher.stale}  # fmt: skip
        if as_json:
            print_json(ready)
        else:
            _line(f"watching {tenant} at rev {watcher.revision} (Ctrl-C to stop)")
        if not changes_only:
            for body in _state(watcher, show_secrets):
                if as_json:
                    print_json(body)
                else:
                    keys = " ".join(f"{k}={_text(v['value'])} (v{v['version']})"
                                    for k, v in body["keys"].items())  # fmt: skip
                    _line(f"state rev {body['revision']} {body['namespace']} {keys}".rstrip())
        stale = watcher.stale
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await stop.wait()
            if watcher.stale != stale:
                stale = watcher.stale
                if as_json:
                    print_json({"type": "stale", "stale": stale, "revision": watcher.revision})
                else:
                    source = "the kvconf server" if watcher.url and watcher.url.startswith(
                        ("http://", "https://")) else "Redis"  # fmt: skip
                    _line(f"stale: {source} unreachable, serving last known values" if stale else
                          f"in sync again at rev {watcher.revision}")  # fmt: skip
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


def watch(
    tenant: Annotated[str, typer.Argument(help="Tenant to follow.")],
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Follow only this namespace (repeatable)."),
    ] = None,
    show_secrets: ShowSecrets = False,
    check_interval: Annotated[
        float, typer.Option("--check-interval", min=0.05, help="Seconds between revision checks.")
    ] = 1.0,
    changes_only: Annotated[
        bool, typer.Option("--changes-only", help="Skip the current state; print changes only.")
    ] = False,
    as_json: JsonFlag = False,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    server: Server = None,
    token: Token = None,
) -> None:
    """Print the tenant's current state, then one line per applied change (and resync).

    As ``kubectl get --watch``: first the state (one ``state`` line per
    namespace, with each key's value and version and the revision), then the
    changes after that revision; ``--changes-only`` skips the state. With
    --json: one JSON object per line, ``type`` ``ready``, ``state``
    (``namespace``, ``revision``, ``keys``), ``change`` (``revision``,
    ``namespace``, ``changes``), ``resync`` or ``stale``. Sensitive values are
    masked unless --show-secrets. Ctrl-C or SIGTERM stops it cleanly.
    """
    where = target(redis_url, data_dir, server, token)
    run(
        _watch(tenant, namespace or None, as_json, show_secrets, check_interval, where,
               changes_only),
        as_json=as_json,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``watch`` to the ``kvconf`` app."""
    app.command()(watch)
