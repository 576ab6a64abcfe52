"""CLI: ``kvconf serve``, the REST API under uvicorn.

Settings travel to the app (``kvconf.api.app:create_app``, a factory) through
``KVCONF_*`` environment variables, so every uvicorn worker builds the same
app. The server refuses a non-loopback address unless auth is configured (an
admin token, or API tokens in the store); on loopback without any it runs
open and says so.
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
from pathlib import Path
from typing import Annotated

import typer
from redis.exceptions import RedisError

from .._logging import logging_config
from .._redis.names import TOKENS_KEY
from ..config import Settings, is_loopback, safe_url
from ..exceptions import KvconfError, Unavailable
from ._common import (
    DataDir,
    NoServer,
    RedisUrl,
    err_console,
    exit_code,
    open_store,
    refuse_server,
    settings,
)

__all__ = ["is_loopback", "register", "serve"]


class ExportFormat(enum.StrEnum):
    """Formats of the periodic export."""

    yaml = "yaml"
    json = "json"


class LogFormat(enum.StrEnum):
    """Formats of the server's log lines."""

    text = "text"
    json = "json"


async def _token_count(cfg: Settings) -> int:
    store = await open_store(cfg)
    try:
        return int(await store.redis.hlen(TOKENS_KEY))
    except RedisError as exc:
        raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
    finally:
        await store.aclose()


def _environment(cfg: Settings) -> dict[str, str]:
    env = {
        "KVCONF_HOST": cfg.host,
        "KVCONF_PORT": str(cfg.port),
        "KVCONF_DATA_DIR": str(cfg.data_dir),
        "KVCONF_SNAPSHOT_EVERY": str(cfg.snapshot_every),
        "KVCONF_SNAPSHOT_KEEP": str(cfg.snapshot_keep),
        "KVCONF_FSYNC_WRITES": "true" if cfg.fsync_writes else "false",
        "KVCONF_EXPORT_EVERY": str(cfg.export_every),
        "KVCONF_EXPORT_FORMAT": cfg.export_format,
        "KVCONF_EXPORT_KEEP": str(cfg.export_keep),
        "KVCONF_EXPORT_SECRETS": "true" if cfg.export_secrets else "false",
        "KVCONF_MAX_STREAMS": str(cfg.max_streams),
        "KVCONF_LOG_FORMAT": cfg.log_format,
        "KVCONF_LOG_LEVEL": cfg.log_level,
        "KVCONF_WRITE_TIMEOUT": str(cfg.write_timeout),
    }
    if cfg.export_dir is not None:
        env["KVCONF_EXPORT_DIR"] = str(cfg.export_dir)
    if cfg.redis_url is not None:
        env["KVCONF_REDIS_URL"] = cfg.redis_url
    if cfg.admin_token is not None:
        env["KVCONF_ADMIN_TOKEN"] = cfg.admin_token
    return env


def serve(
    host: Annotated[
        str, typer.Option("--host", envvar="KVCONF_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", envvar="KVCONF_PORT", min=0, max=65535, help="Port.")
    ] = 8767,
    redis_url: RedisUrl = None,
    data_dir: DataDir = None,
    admin_token_env: Annotated[
        str,
        typer.Option(
            "--admin-token-env", help="Environment variable holding the admin bearer token."
        ),
    ] = "KVCONF_ADMIN_TOKEN",  # noqa: S107 - the name of a variable, not a secret
    snapshot_every: Annotated[
        str | None,
        typer.Option(
            "--snapshot-every",
            envvar="KVCONF_SNAPSHOT_EVERY",
            help="Snapshot schedule (10m, 1h; 0: off).",
        ),
    ] = None,
    snapshot_keep: Annotated[
        int | None,
        typer.Option("--snapshot-keep", envvar="KVCONF_SNAPSHOT_KEEP", min=1, help="Keep N."),
    ] = None,
    fsync_writes: Annotated[
        bool,
        typer.Option("--fsync-writes", help="Embedded mode: persist before acknowledging."),
    ] = False,
    export_every: Annotated[
        str | None,
        typer.Option(
            "--export-every",
            envvar="KVCONF_EXPORT_EVERY",
            help="Readable full export schedule (10m, 1h30m; 0: off).",
        ),
    ] = None,
    export_dir: Annotated[
        Path | None,
        typer.Option(
            "--export-dir",
            envvar="KVCONF_EXPORT_DIR",
            help="Directory of exports (default: <data dir>/exports).",
        ),
    ] = None,
    export_format: Annotated[
        ExportFormat | None,
        typer.Option("--export-format", envvar="KVCONF_EXPORT_FORMAT", help="yaml or json."),
    ] = None,
    export_keep: Annotated[
        int | None,
        typer.Option(
            "--export-keep", envvar="KVCONF_EXPORT_KEEP", min=1, help="Timestamped copies kept."
        ),
    ] = None,
    export_secrets: Annotated[
        bool,
        typer.Option("--export-secrets", help="Write sensitive values unmasked in exports."),
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Processes.")] = 1,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", envvar="KVCONF_LOG_FORMAT", help="text or json lines."),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            envvar="KVCONF_LOG_LEVEL",
            help="debug, info, warning, error (kvconf and uvicorn).",
        ),
    ] = None,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    write_timeout: Annotated[
        str | None,
        typer.Option(
            "--write-timeout",
            envvar="KVCONF_WRITE_TIMEOUT",
            help="A write Redis has not answered by then is a 503 (default 800ms; 0: none).",
        ),
    ] = None,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            envvar="KVCONF_FORWARDED_ALLOW_IPS",
            help="Proxies whose X-Forwarded-For is trusted (comma-separated; default: none).",
        ),
    ] = None,
    max_streams: Annotated[
        int | None,
        typer.Option(
            "--max-streams",
            envvar="KVCONF_MAX_STREAMS",
            min=1,
            help="Watch streams per worker; more are refused with 503 (default 10000).",
        ),
    ] = None,
    server: NoServer = None,
) -> None:
    """Serve the REST API (default http://127.0.0.1:8767, embedded store)."""
    import uvicorn

    refuse_server(server, "kvconf serve is the server; it cannot run through another one")

    token = os.environ.get(admin_token_env) or None
    try:
        cfg = settings(
            redis_url, data_dir, host=host, port=port, admin_token=token,
            snapshot_every=snapshot_every, snapshot_keep=snapshot_keep,
            fsync_writes=fsync_writes or None, forwarded_allow_ips=forwarded_allow_ips,
            max_streams=max_streams,
            export_every=export_every,
            export_dir=export_dir, export_keep=export_keep,
            export_format=export_format.value if export_format else None,
            export_secrets=export_secrets or None,
            log_format=log_format.value if log_format else None,
            log_level=log_level.upper() if log_level else None,
            write_timeout=write_timeout,
        )  # fmt: skip
        if cfg.redis_url is None and workers > 1:
            err_console.print(
                "error: the embedded store lives in one process; use --workers 1 or --redis-url"
            )
            raise typer.Exit(2)
        tokens: int | None = -1
        if cfg.admin_token is None and (not is_loopback(host) or cfg.redis_url is not None):
            tokens = asyncio.run(_token_count(cfg))
    except Unavailable as exc:
        # Serve anyway: /readyz answers 503 until Redis is back. The app never
        # runs open off loopback, so not knowing the tokens is safe.
        err_console.print(
            f"[yellow]warning:[/yellow] Redis is not reachable ({exc.message}); serving "
            "anyway: /readyz answers 503 and requests needing Redis 503 until it is back",
            highlight=False,
            soft_wrap=True,
        )
        tokens = None
    except KvconfError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(exit_code(exc)) from None
    open_mode = cfg.admin_token is None and tokens is not None and tokens <= 0
    if open_mode and not is_loopback(host):
        err_console.print(
            f"error: refusing to listen on {host} without auth: set {admin_token_env} "
            "or create API tokens first (or listen on 127.0.0.1)"
        )
        raise typer.Exit(2)
    os.environ.update(_environment(cfg))
    multiproc = _multiprocess_dir(cfg, workers)
    log_config = logging_config(cfg.log_format, cfg.log_level)
    where = safe_url(cfg.redis_url) if cfg.redis_url else f"embedded (data dir {cfg.data_dir})"
    if cfg.admin_token is not None:
        auth = "admin token set"
    elif tokens is None:
        auth = "API tokens (unknown until Redis answers)"
    elif tokens > 0:
        auth = f"{tokens} API token(s)"
    else:
        auth = "OPEN (no tokens: every caller is an admin; loopback only)"
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"kvconf serving http://{shown}:{port}  store: {where}  auth: {auth}", soft_wrap=True
    )
    if open_mode:
        err_console.print("[yellow]warning:[/yellow] running without authentication")
    uvicorn.run(
        "kvconf.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config,
        log_level=cfg.log_level.lower(),
        access_log=access_log,
        # uvicorn believes X-Forwarded-For from 127.0.0.1 by default, so any
        # local process could write someone else's address into the audit
        # trail: forwarded headers count only from configured proxies.
        proxy_headers=bool(cfg.forwarded_allow_ips),
        forwarded_allow_ips=cfg.forwarded_allow_ips or None,
    )
    if multiproc is not None:
        shutil.rmtree(multiproc, ignore_errors=True)


def _multiprocess_dir(cfg: Settings, workers: int) -> Path | None:
    """With several workers, a fresh prometheus-client multiprocess directory.

    Every worker writes its metrics to files there and a scrape of any worker
    sums them; the directory is emptied at start (stale files of a previous
    run would add to the totals) and removed at exit.
    """
    if workers <= 1:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return None
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = Path(given) if given else cfg.data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


def register(app: typer.Typer) -> None:
    """Add ``serve`` to the ``kvconf`` app."""
    app.command()(serve)
