"""Full readable exports: every tenant's current configuration in one file.

``kvconf serve --export-every 10m --export-dir DIR`` runs :func:`export_service`:
every interval it reads each tenant at one revision and writes
``DIR/kvconf-full.<json|yaml>`` with the values, their versions and the tenant
revision (sensitive values masked unless ``export_secrets``), plus a
timestamped copy, keeping the newest ``export_keep`` copies. Files are
written the way snapshots are: a temporary file, fsynced, renamed into
place, the directory fsynced, mode 0600.

>>> path = await export_once(store, settings)
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from . import _jobs
from ._tasks import stop_task, to_the_end
from .config import Settings
from .exceptions import TenantNotFound
from .io import dumps
from .schema import effective_specs, mask_value
from .store import Store

__all__ = [
    "EXPORT_NAME",
    "export_dir",
    "export_everything",
    "export_once",
    "export_service",
    "exporter_lock",
]

T = TypeVar("T")
log = logging.getLogger("kvconf.export")

#: Stem of the export files: ``kvconf-full.json`` and ``kvconf-full-<UTC time>.json``.
EXPORT_NAME = "kvconf-full"
FULL_EXPORT_VERSION = 1


def export_dir(settings: Settings) -> Path:
    """Where exports go: ``settings.export_dir``, else ``<data_dir>/exports``."""
    return settings.export_dir or settings.data_dir / "exports"


async def export_everything(store: Store, *, secrets: bool = False) -> dict[str, Any]:
    """Every live tenant as a JSON-ready document, each read at one revision."""
    tenants: dict[str, Any] = {}
    for tenant in await store.tenants():
        try:
            state = await store.read_state(tenant)
            schemas = await store.schemas(tenant)
        except TenantNotFound:
            continue  # deleted between the listing and the read
        namespaces: dict[str, Any] = {}
        for ns, entries in sorted(state.namespaces.items()):
            if not entries:
                continue
            specs = {} if secrets else effective_specs(schemas, ns)
            namespaces[ns] = {
                key: {
                    "value": mask_value(e.value, specs.get(key)),
                    "version": e.version,
                    "revision": e.revision,
                    "updated_at": e.updated_at,
                    "updated_by": e.updated_by,
                }
                for key, e in sorted(entries.items())
            }
        tenants[tenant] = {
            "revision": state.revision,
            "epoch": state.epoch,
            "namespaces": namespaces,
        }
    return {
        "kvconf_full_export": FULL_EXPORT_VERSION,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "secrets": secrets,
        "tenants": tenants,
    }


def _write_atomic(directory: Path, name: str, data: bytes, copy_name: str | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if copy_name is not None:
            # A hard link to the same fsynced inode: the timestamped copy costs
            # no second write, and the later rename of the current file leaves it.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, directory / copy_name)
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return directory / name


def _write_and_prune(
    directory: Path, ext: str, data: bytes, stamp: str, keep: int
) -> tuple[Path, list[Path]]:
    """Write the export and its timestamped copy, then keep the newest ``keep`` copies."""
    path = _write_atomic(directory, f"{EXPORT_NAME}.{ext}", data, f"{EXPORT_NAME}-{stamp}.{ext}")
    return path, _prune(directory, ext, keep)


def _prune(directory: Path, ext: str, keep: int) -> list[Path]:
    copies = sorted(directory.glob(f"{EXPORT_NAME}-*.{ext}"))
    removed = copies[: max(0, len(copies) - keep)]
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return removed


async def export_once(store: Store, settings: Settings) -> Path:
    """Write one full export now; returns the path of ``kvconf-full.<ext>``."""
    doc = await export_everything(store, secrets=settings.export_secrets)
    ext = settings.export_format
    data = dumps(doc, ext).encode()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    directory = export_dir(settings)
    path, removed = await to_the_end(
        asyncio.to_thread(_write_and_prune, directory, ext, data, stamp, settings.export_keep)
    )
    log.info(
        "scheduled export %s (%d tenants, %d bytes); pruned %d",
        path, len(doc["tenants"]), len(data), len(removed),
    )  # fmt: skip
    return path


LOCK_NAME = ".kvconf-export.lock"


def exporter_lock(directory: Path) -> int | None:
    """An open descriptor holding the export directory's lock, or None if another holds it.

    With ``kvconf serve --workers N`` every worker runs the export service;
    the one holding this lock (``flock``, released when its process ends)
    exports and the others stand by, so a directory gets one export per
    interval.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def _export_loop(store: Store, settings: Settings) -> None:
    lock: int | None = None
    try:
        while True:
            await asyncio.sleep(settings.export_every)
            if lock is None:
                try:
                    lock = exporter_lock(export_dir(settings))
                except OSError:  # the export itself reports the directory's problem
                    await _run_export(store, settings)
                    continue
                if lock is None:
                    continue  # another worker exports this directory
            await _run_export(store, settings)
    finally:
        if lock is not None:
            os.close(lock)


async def _run_export(store: Store, settings: Settings) -> None:
    start = time.perf_counter()
    try:
        await export_once(store, settings)
    except Exception:
        _jobs.record("export", False)
        log.exception("scheduled export failed")
    else:
        _jobs.record("export", True)
    log.debug("export took %.3f s", time.perf_counter() - start)


@asynccontextmanager
async def export_service(store: Store, settings: Settings) -> AsyncIterator[None]:
    """Export every ``settings.export_every`` seconds while the context is open (0: off)."""
    if settings.export_every <= 0:
        yield
        return
    task = asyncio.create_task(_export_loop(store, settings))
    try:
        yield
    finally:
        # Cancelled until it ends: redis-py may swallow a cancellation that
        # lands inside a command, and a single cancel then never ends the loop.
        await stop_task(task)
