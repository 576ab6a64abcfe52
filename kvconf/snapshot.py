"""Snapshots: save, verify, list and restore whole tenants as safe files.

>>> info = await save(store, Path("backups"))                # every live tenant
>>> verify(info.path).tenants[0].revision
42
>>> report = await restore(store, info.path, tenants=["acme"], as_tenant="acme-copy")

A snapshot holds, per tenant, its current values with their metadata, the
history of every key (deleted ones too; one list per namespace), change log,
schemas, tenant metadata, revision and epoch, each tenant captured by one
MULTI/EXEC transaction at one revision while writes go on. Files are written
per invariant 6 (temporary file, fsync, atomic rename, directory fsync,
mode 0600) and carry a format version and a SHA-256 that
:func:`verify` and :func:`restore` check before touching Redis (see
:mod:`kvconf._snapshot.format` for the layout).

A restore writes each tenant in one transaction (a tenant is never half
restored; one that keeps changing meanwhile is refused with
:class:`~kvconf.exceptions.Conflict`), moves its revision past both the file's
and the live one, gives it a fresh epoch and logs and publishes a ``reset``
event, so watchers resynchronise. It first saves a safety snapshot of what it
overwrites.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AsyncExitStack, aclosing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
from redis.exceptions import RedisError

from ._redis.names import TENANTS_KEY, TenantKeys, validate_tenant
from ._redis.scripts import Scripts
from ._snapshot.capture import capture_stream, dedicated_connections, revisions, scan_suffixes
from ._snapshot.format import (
    SUFFIX,
    Footer,
    RecordBatch,
    SnapshotReader,
    SnapshotWriter,
    TenantDump,
    TenantSummary,
    read_footer,
    remove_stale_temporaries,
    snapshot_name,
)
from ._snapshot.restore import (
    restore_args,
    restore_diff,
    restore_one,
    restore_tx,
    run_after_restore,
)
from .exceptions import InvalidInput, KvconfError, NotFound, TenantNotFound, Unavailable
from .store import Store

__all__ = [
    "RestoreMode",
    "RestoreReport",
    "SnapshotInfo",
    "TenantRestore",
    "TenantSummary",
    "default_dir",
    "list_snapshots",
    "prune",
    "restore",
    "save",
    "verify",
]

log = logging.getLogger("kvconf.snapshot")

RestoreMode = Literal["replace", "merge"]
#: Restore transactions in flight at once, one per dedicated connection.
_RESTORE_WINDOW = 4
#: Restore scripts in flight at once where there are no dedicated connections (cluster).
_RESTORE_SCRIPTS = 2
#: Bytes of encoded tenants handed to the compressing thread at once.
_WRITE_BATCH = 16 << 20
#: Progress callback: (done, total, what).
Progress = Callable[[int, int, str], None]


class SnapshotInfo(msgspec.Struct, frozen=True):
    """A snapshot file's description: where, when, and what it holds.

    ``verified`` is True when the checksum and contents were checked
    (:func:`verify`, :func:`save`); :func:`list_snapshots` only reads footers.
    """

    path: str
    format: int
    created_at: datetime
    size: int
    label: str
    tenants: list[TenantSummary]
    keys: int
    versions: int
    verified: bool


class TenantRestore(msgspec.Struct, frozen=True):
    """What a restore did (or, in a dry run, would do) to one tenant."""

    tenant: str
    source: str
    mode: RestoreMode
    live_revision: int
    file_revision: int
    revision: int
    added: int
    changed: int
    removed: int
    unchanged: int
    epoch: str = ""


class RestoreReport(msgspec.Struct, frozen=True):
    """The outcome of :func:`restore`."""

    path: str
    dry_run: bool
    tenants: list[TenantRestore]
    safety_snapshot: str | None = None


def default_dir(store_or_dir: Store | Path) -> Path:
    """The snapshot directory of a store: ``<data_dir>/snapshots``."""
    if isinstance(store_or_dir, Path):
        return store_or_dir
    return store_or_dir.settings.data_dir / "snapshots"


def _info(path: Path, footer: Footer, *, verified: bool) -> SnapshotInfo:
    return SnapshotInfo(
        path=str(path),
        format=footer.format,
        created_at=footer.created_at,
        size=path.stat().st_size,
        label=footer.label,
        tenants=footer.tenants,
        keys=sum(t.keys for t in footer.tenants),
        versions=sum(t.versions for t in footer.tenants),
        verified=verified,
    )


def _unavailable(exc: RedisError) -> Unavailable:
    return Unavailable(f"redis: {exc}", reason=type(exc).__name__)


async def capture_all(
    store: Store,
    tenants: Sequence[str] | None,
    *,
    include_deleted: bool = False,
) -> list[str]:
    """The tenants to capture (soft-deleted ones too with ``include_deleted``)."""
    client = store.redis
    if tenants is None:
        await store.repair_tenants()  # a tenant with data is backed up, listed or not
        names = await store.tenants()
        if include_deleted:
            metas = await scan_suffixes(client, None, kind="meta")
            names = sorted(set(names) | set(metas))
    else:
        names = [validate_tenant(t) for t in tenants]
    return names


async def write_snapshot(
    store: Store,
    path: Path,
    tenants: Sequence[str] | None,
    *,
    label: str = "",
    generation: int = 0,
    strict: bool = False,
    include_deleted: bool = False,
    progress: Progress | None = None,
) -> Footer:
    """Capture tenants into a new file at ``path`` (replacing it atomically)."""
    try:
        names = await capture_all(store, tenants, include_deleted=include_deleted)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

        with SnapshotWriter(path, label=label, generation=generation) as writer:
            adding: asyncio.Future[Any] | None = None
            batch = RecordBatch()

            async def flush() -> None:
                nonlocal adding, batch
                if adding is not None:
                    await adding
                # compression and the file write run beside the next captures
                adding = asyncio.ensure_future(asyncio.to_thread(writer.add_batch, batch))
                batch = RecordBatch()

            try:
                async with aclosing(capture_stream(store.redis, names)) as dumps:
                    i = 0
                    async for dump in dumps:
                        name = names[i]
                        i += 1
                        deleted = "deleted_at" in (dump.meta if dump is not None else {})
                        if strict and (dump is None or deleted):
                            raise TenantNotFound(name)
                        if dump is None or (deleted and not include_deleted and tenants is None):
                            continue
                        batch.add(dump)
                        if batch.size >= _WRITE_BATCH:
                            await flush()
                        if progress is not None:
                            progress(i, len(names), name)
                if batch.summaries:
                    await flush()
                if adding is not None:
                    await adding
            finally:
                # on error: no thread left writing to the file
                if adding is not None:
                    await asyncio.gather(adding, return_exceptions=True)
            return await asyncio.to_thread(writer.finish)
    except RedisError as exc:
        raise _unavailable(exc) from exc


async def save(
    store: Store,
    directory: Path | None = None,
    tenants: Iterable[str] | None = None,
    *,
    label: str = "",
    progress: Progress | None = None,
) -> SnapshotInfo:
    """Save a snapshot of ``tenants`` (default: every live tenant) into ``directory``.

    ``directory`` defaults to ``<data_dir>/snapshots``. Returns the new file's
    description; :class:`TenantNotFound` if a named tenant does not exist.
    """
    directory = default_dir(store) if directory is None else Path(directory)
    path = directory / snapshot_name(label)
    chosen = None if tenants is None else list(dict.fromkeys(tenants))
    footer = await write_snapshot(
        store, path, chosen, label=label, strict=chosen is not None, progress=progress
    )
    return _info(path, footer, verified=True)


def verify(path: str | os.PathLike[str]) -> SnapshotInfo:
    """Check a snapshot's format version, checksum and contents; return its summary.

    Raises :class:`SnapshotCorrupt`, :class:`SnapshotVersionUnsupported` or
    :class:`SnapshotNotFound`.
    """
    with SnapshotReader(Path(path)) as reader:
        for _ in reader.dumps():
            pass
        return _info(reader.path, reader.footer, verified=True)


def list_snapshots(directory: str | os.PathLike[str]) -> list[SnapshotInfo]:
    """Snapshots in ``directory``, oldest first (footers only: use :func:`verify`).

    Unreadable files are skipped; temporary files of unfinished saves are ignored.
    """
    found: list[SnapshotInfo] = []
    root = Path(directory)
    if not root.is_dir():
        return found
    for path in sorted(root.glob(f"*{SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            found.append(_info(path, read_footer(path), verified=False))
        except (KvconfError, OSError):
            continue
    return found


def prune(directory: str | os.PathLike[str], keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots kvconf named; return the deleted."""
    root = Path(directory)
    if keep < 1 or not root.is_dir():
        return []
    ours = sorted(p for p in root.glob(f"kvconf-*{SUFFIX}") if p.is_file())
    doomed = ours[:-keep]
    for path in doomed:
        path.unlink(missing_ok=True)
    remove_stale_temporaries(root)
    return doomed


async def _safety_snapshot(store: Store, directory: Path | None, tenants: list[str]) -> str | None:
    """Save what a restore will overwrite (soft-deleted tenants too); None if nothing."""
    present = []
    for tenant in tenants:
        tk = TenantKeys(tenant)
        if await store.redis.exists(tk.meta, tk.rev):
            present.append(tenant)
    if not present:
        return None
    path = default_dir(store) if directory is None else Path(directory)
    path = path / snapshot_name("pre-restore")
    await write_snapshot(store, path, present, label="pre-restore")
    return str(path)


def _restore_targets(
    info: SnapshotInfo, source: Path, tenants: Iterable[str] | None, as_tenant: str | None
) -> dict[str, str]:
    """File tenant → the tenant it is restored as, checked before Redis is touched."""
    in_file = [t.tenant for t in info.tenants]
    chosen = in_file if tenants is None else list(dict.fromkeys(tenants))
    if as_tenant is not None:
        if len(chosen) != 1:
            raise InvalidInput("--as needs exactly one tenant from the snapshot (use --tenant)")
        validate_tenant(as_tenant)
    for t in chosen:
        if t not in in_file:
            raise NotFound(f"tenant {t!r} is not in snapshot {source}", tenant=t)
    targets = {t: (as_tenant or t) for t in chosen}
    for t in targets.values():
        validate_tenant(t)
    return targets


def _restore_row(
    dump: TenantDump,
    target: str,
    mode: RestoreMode,
    counts: tuple[int, ...],
    live_rev: int,
    reply: Any,
) -> TenantRestore:
    """The report row of one restored tenant (``reply`` None: a dry run)."""
    new_rev, epoch = max(live_rev, dump.revision) + 1, ""
    if reply is not None:
        new_rev, epoch, live_rev, _ = reply
    added, changed, removed, unchanged = counts
    return TenantRestore(
        tenant=target, source=dump.tenant, mode=mode, live_revision=live_rev,
        file_revision=dump.revision, revision=new_rev, added=added, changed=changed,
        removed=removed, unchanged=unchanged, epoch=epoch,
    )  # fmt: skip


class _Restorer:
    """Restores tenants with a window of transactions in flight, rows in file order.

    Redis restores some tenants while the next are decoded and encoded; one
    transaction in flight per dedicated connection (the restore script when
    there is none, and for ``merge``).
    """

    def __init__(
        self,
        store: Store,
        conns: list[Any],
        *,
        actor: str,
        reason: str,
        total: int,
        progress: Progress | None,
    ) -> None:
        self.store, self.actor, self.reason = store, actor, reason
        self.scripts = Scripts(store.redis)
        self.idle = list(conns)
        self.window = len(conns) or _RESTORE_SCRIPTS
        self.inflight: list[tuple[asyncio.Future[Any], Callable[[Any], TenantRestore]]] = []
        self.results: list[TenantRestore] = []
        self.total, self.progress = total, progress

    def add(self, row: TenantRestore) -> None:
        self.results.append(row)
        if self.progress is not None:
            self.progress(len(self.results), self.total, row.tenant)

    async def submit(
        self, dump: TenantDump, target: str, mode: RestoreMode, row: Callable[[Any], TenantRestore]
    ) -> None:
        """Start restoring ``dump`` as ``target``; wait while the window is full."""
        self.inflight.append((asyncio.ensure_future(self._one(dump, target, mode)), row))
        while len(self.inflight) >= self.window:
            await self.settle_oldest()

    async def settle_oldest(self) -> None:
        task, row = self.inflight.pop(0)
        self.add(row(await task))

    async def drain(self) -> None:
        while self.inflight:
            await self.settle_oldest()

    async def abandon(self) -> None:
        """On error: nothing left unawaited (a transaction already sent still completes)."""
        await asyncio.gather(*(task for task, _ in self.inflight), return_exceptions=True)

    async def _one(self, dump: TenantDump, target: str, mode: RestoreMode) -> Any:
        log_limit = self.store.settings.log_limit
        # Listed before it holds restored data: see Store.tenants().
        await self.store.redis.sadd(TENANTS_KEY, target)
        if mode == "merge" or not self.idle:
            args = restore_args(
                dump, target, mode=mode, actor=self.actor, reason=self.reason, log_limit=log_limit
            )
            return await restore_one(self.scripts, dump, target, args)
        conn = self.idle.pop()
        reply = await restore_tx(
            conn, dump, target, mode=mode, actor=self.actor, reason=self.reason,
            log_limit=log_limit,
        )  # fmt: skip
        self.idle.append(conn)  # not on error: a failed exchange may leave replies unread
        return reply


async def restore(
    store: Store,
    path: str | os.PathLike[str],
    *,
    tenants: Iterable[str] | None = None,
    as_tenant: str | None = None,
    mode: RestoreMode = "replace",
    dry_run: bool = False,
    safety_dir: Path | None = None,
    actor: str | None = None,
    reason: str = "",
    progress: Progress | None = None,
) -> RestoreReport:
    """Restore tenants from a snapshot file, each atomically.

    The file is verified first: a bad file raises before Redis is touched.
    ``tenants`` picks tenants of the file (default: all); ``as_tenant``
    restores the one picked tenant under another name. ``mode="replace"``
    makes each tenant exactly the captured one; ``"merge"`` writes the
    captured keys over the live tenant as new versions where they differ
    and keeps live-only keys. ``dry_run`` only reports what would change.
    Unless dry, a safety snapshot of the live tenants about to be
    overwritten is saved first (into ``safety_dir``, default
    ``<data_dir>/snapshots``).
    """
    if mode not in ("replace", "merge"):
        raise InvalidInput(f"restore mode must be 'replace' or 'merge', not {mode!r}")
    source = Path(path)
    info = await asyncio.to_thread(verify, source)  # off the event loop (servers)
    targets = _restore_targets(info, source, tenants, as_tenant)
    names = list(targets.values())
    safety: str | None = None
    try:
        async with AsyncExitStack() as stack:
            live_revs = await revisions(store.redis, names)
            if not dry_run:
                safety = await _safety_snapshot(store, safety_dir, names)
            conns = await stack.enter_async_context(
                dedicated_connections(
                    store.redis, 0 if dry_run else min(_RESTORE_WINDOW, len(names))
                )
            )
            restorer = _Restorer(
                store, conns, actor=actor or store.settings.actor,
                reason=reason or f"restore from {source.name}", total=len(targets),
                progress=progress,
            )  # fmt: skip
            try:
                with SnapshotReader(source) as reader:
                    for dump in reader.dumps():
                        if dump.tenant not in targets:
                            continue
                        target = targets[dump.tenant]
                        eff_mode: RestoreMode = mode
                        if mode == "merge" and not await store.exists(target):
                            eff_mode = "replace"
                        counts = await restore_diff(store, dump, target, eff_mode)
                        row = functools.partial(
                            _restore_row, dump, target, eff_mode, counts, live_revs[target]
                        )
                        if dry_run:
                            restorer.add(row(None))
                        else:
                            await restorer.submit(dump, target, eff_mode, row)
                    await restorer.drain()
            finally:
                await restorer.abandon()
    except RedisError as exc:
        await _persist_after_failure(store, dry_run, names)
        raise _unavailable(exc) from exc
    except BaseException:
        await _persist_after_failure(store, dry_run, names)
        raise
    if not dry_run:
        await run_after_restore(store, names)
    return RestoreReport(
        path=str(source), dry_run=dry_run, tenants=restorer.results, safety_snapshot=safety
    )


async def _persist_after_failure(store: Store, dry_run: bool, tenants: list[str]) -> None:
    """Journal what a failed restore already wrote, keeping its error the one raised."""
    if dry_run:
        return
    try:
        await run_after_restore(store, tenants)
    except Exception:
        log.exception("a failed restore's tenants could not be persisted to the data dir")


async def load_dump(store: Store, dump: TenantDump) -> None:
    """Write a captured tenant exactly as captured, replacing what is there.

    For the embedded store's start-up and journal replay.
    """
    async with dedicated_connections(store.redis, 1) as conns:
        if conns:
            await restore_tx(conns[0], dump, dump.tenant, mode="load", actor="", reason="",
                             log_limit=store.settings.log_limit)  # fmt: skip
        else:
            args = restore_args(dump, dump.tenant, mode="load", actor="", reason="",
                                log_limit=store.settings.log_limit)  # fmt: skip
            await restore_one(Scripts(store.redis), dump, dump.tenant, args)
    if "deleted_at" not in dump.meta and "created_at" in dump.meta:
        await store.redis.sadd(TENANTS_KEY, dump.tenant)
