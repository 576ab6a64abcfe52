"""What a command works on: the library over Redis (or the embedded store), or a
``kvconf serve`` through its REST API only.

:func:`opened` is the one place that opens either, from the :class:`Target`
that :func:`kvconf.cli._common.target` chose. Both give a :class:`Backend`: a
:class:`~kvconf.Store` (an :class:`~kvconf._http.store.HttpStore` through a
server) for everything Store methods do, and the same few operations that need
more (tokens, tenant lifecycle, time travel, fleet, stats), returning the same
library types, so a command prints the same lines either way.
:class:`Direct` is the library; :class:`~kvconf.cli._remote.Remote` the REST API.

An embedded data dir owned by a running ``kvconf serve`` is reached through
that server (the lock file names its URL) instead of being refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from .. import snapshot, timeline
from .._snapshot.embedded import serving_url
from .._watch.fleet import FleetMember, fleet
from ..exceptions import Unauthorized
from ..io import HistoryImport, ImportDocument, import_history
from ..models import WriteResult
from ..stats import Stats, TenantStats, stats, tenant_stats
from ..store import Store
from ..tenants import TenantStatus, provision, tenant_states
from ..tokens import TokenRecord, Tokens
from ..watcher import Watcher
from . import _preview
from ._common import Target, open_store, settings
from ._remote import Progress, Remote

__all__ = ["Backend", "Direct", "opened", "resolve", "watching", "with_backend", "with_store"]

T = TypeVar("T")


class Backend(Protocol):
    """The operations of CLI commands, the same through Redis and through a server."""

    store: Store
    #: The server's URL, or None (Redis or the embedded store).
    server: str | None

    async def aclose(self) -> None: ...
    async def tenant_states(self, include_deleted: bool) -> list[TenantStatus]: ...
    async def provision(
        self, name: str, *, source: str | None, whole: bool,
        overrides: Mapping[str, Mapping[str, Any]], actor: str | None, reason: str,
    ) -> int: ...  # fmt: skip
    async def delete_tenant(self, name: str, *, hard: bool) -> str | None: ...
    async def diff(
        self, tenant: str, from_revision: int, to_revision: int | None, namespace: str | None
    ) -> timeline.Diff: ...
    async def read_log(self, tenant: str, since: int, limit: int) -> list[timeline.LogEvent]: ...
    async def rollback(
        self, tenant: str, to_revision: int, *, namespace: str | None, actor: str | None,
        reason: str,
    ) -> list[WriteResult]: ...  # fmt: skip
    async def rollback_preview(
        self, tenant: str, to_revision: int, *, namespace: str | None, show_secrets: bool
    ) -> list[dict[str, Any]]: ...
    async def changes_preview(
        self, tenant: str, values: Mapping[str, Mapping[str, Any]],
        deletes: Mapping[str, Sequence[str]], expect: Mapping[str, Mapping[str, int]], *,
        create: bool, actor: str | None, reason: str, show_secrets: bool,
    ) -> list[dict[str, Any]]: ...  # fmt: skip
    async def fleet(self, tenant: str) -> list[FleetMember]: ...
    async def create_token(
        self, name: str, grants: dict[str, list[str]], actor: str | None
    ) -> str: ...
    async def tokens(self) -> list[TokenRecord]: ...
    async def revoke_token(self, name: str) -> None: ...
    async def stats(self) -> Stats: ...
    async def tenant_stats(self, tenant: str) -> TenantStats: ...
    async def import_history(
        self, tenant: str, document: ImportDocument, *, replace: bool, dry_run: bool,
        actor: str | None, reason: str,
    ) -> HistoryImport: ...  # fmt: skip
    async def save_snapshots(
        self, tenants: Sequence[str] | None, directory: Path | None, label: str,
        progress: Progress,
    ) -> list[snapshot.SnapshotInfo]: ...  # fmt: skip
    async def restore_snapshot(
        self, file: Path, *, tenants: Sequence[str] | None, as_tenant: str | None,
        mode: Literal["replace", "merge"], dry_run: bool, reason: str, progress: Progress,
    ) -> snapshot.RestoreReport: ...  # fmt: skip


class Direct:
    """The library on a Store over Redis or the embedded store."""

    server: str | None = None

    def __init__(self, store: Store) -> None:
        self.store = store

    async def aclose(self) -> None:
        """Close the store."""
        await self.store.aclose()

    async def tenant_states(self, include_deleted: bool) -> list[TenantStatus]:
        """Every tenant with its state (see :func:`kvconf.tenants.tenant_states`)."""
        return await tenant_states(self.store, include_deleted=include_deleted)

    async def provision(
        self, name: str, *, source: str | None, whole: bool,
        overrides: Mapping[str, Mapping[str, Any]], actor: str | None, reason: str,
    ) -> int:  # fmt: skip
        """Create a tenant, empty or from a source (see :func:`kvconf.tenants.provision`)."""
        return await provision(
            self.store, name, source=source, whole=whole, overrides=overrides,
            actor=actor or self.store.settings.actor, reason=reason,
        )  # fmt: skip

    async def delete_tenant(self, name: str, *, hard: bool) -> str | None:
        """Delete a tenant; a hard delete saves a snapshot first (its path is returned)."""
        saved = None
        if hard and not await self.store.is_deleted(name):
            info = await snapshot.save(self.store, None, [name], label=f"before-delete-{name}")
            saved = str(info.path)
        await self.store.delete_tenant(name, hard=hard)
        return saved

    async def diff(
        self, tenant: str, from_revision: int, to_revision: int | None, namespace: str | None
    ) -> timeline.Diff:
        """Keys that differ between two revisions (see :func:`kvconf.timeline.diff`)."""
        return await timeline.diff(
            self.store, tenant, from_revision, to_revision, namespace=namespace
        )

    async def read_log(self, tenant: str, since: int, limit: int) -> list[timeline.LogEvent]:
        """The change log after ``since`` (see :func:`kvconf.timeline.read_log`)."""
        return await timeline.read_log(self.store, tenant, since, limit=limit)

    async def rollback(
        self, tenant: str, to_revision: int, *, namespace: str | None, actor: str | None,
        reason: str,
    ) -> list[WriteResult]:  # fmt: skip
        """A revision rollback (see :func:`kvconf.timeline.rollback`)."""
        return await timeline.rollback(
            self.store, tenant, to_revision, namespace=namespace, actor=actor, reason=reason
        )

    async def rollback_preview(
        self, tenant: str, to_revision: int, *, namespace: str | None, show_secrets: bool
    ) -> list[dict[str, Any]]:
        """The rows a revision rollback would change, checked as the write would be."""
        store = self.store
        plans = await timeline.rollback_plans(store, tenant, to_revision, namespace=namespace)
        state = await store.read_state(tenant, [p.namespace for p in plans])
        rows: list[dict[str, Any]] = []
        for plan in plans:
            await store.check(tenant, plan.namespace, plan.values, deletes=plan.deletes,
                              expect=plan.expect)  # fmt: skip
            rows.extend(_preview.changes(
                plan.namespace, state.namespaces.get(plan.namespace, {}), plan.values,
                plan.deletes, await store.specs(tenant, plan.namespace), show_secrets,
            ))  # fmt: skip
        return rows

    async def changes_preview(
        self, tenant: str, values: Mapping[str, Mapping[str, Any]],
        deletes: Mapping[str, Sequence[str]], expect: Mapping[str, Mapping[str, int]], *,
        create: bool, actor: str | None, reason: str, show_secrets: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """The rows a change set across namespaces would change, checked as the write is."""
        return await _preview.across_changes(
            self.store, tenant, values, deletes, expect, create=create, actor=actor,
            reason=reason, show_secrets=show_secrets,
        )  # fmt: skip

    async def fleet(self, tenant: str) -> list[FleetMember]:
        """The tenant's watchers; :class:`TenantNotFound` for an unknown tenant."""
        await self.store.info(tenant)
        return await fleet(self.store, tenant)

    async def create_token(self, name: str, grants: dict[str, list[str]], actor: str | None) -> str:
        """Create a REST API token; its text (shown once)."""
        text, _ = await Tokens(self.store.redis).create(
            name, grants, actor or self.store.settings.actor
        )
        return text

    async def tokens(self) -> list[TokenRecord]:
        """Every token's record (never its text)."""
        return await Tokens(self.store.redis).list()

    async def revoke_token(self, name: str) -> None:
        """Revoke a token by name."""
        await Tokens(self.store.redis).revoke(name)

    async def stats(self) -> Stats:
        """Figures of every tenant."""
        return await stats(self.store)

    async def tenant_stats(self, tenant: str) -> TenantStats:
        """Figures of one tenant."""
        return await tenant_stats(self.store, tenant)

    async def import_history(
        self, tenant: str, document: ImportDocument, *, replace: bool, dry_run: bool,
        actor: str | None, reason: str,
    ) -> HistoryImport:  # fmt: skip
        """Import keys with their versions (see :func:`kvconf.io.import_history`)."""
        return await import_history(
            self.store, tenant, document, replace=replace, dry_run=dry_run, actor=actor,
            reason=reason,
        )  # fmt: skip

    async def save_snapshots(
        self, tenants: Sequence[str] | None, directory: Path | None, label: str,
        progress: Progress,
    ) -> list[snapshot.SnapshotInfo]:  # fmt: skip
        """One snapshot file of every live tenant (or of ``tenants``)."""
        info = await snapshot.save(
            self.store, directory, list(tenants) if tenants else None, label=label,
            progress=progress,
        )  # fmt: skip
        return [info]

    async def restore_snapshot(
        self, file: Path, *, tenants: Sequence[str] | None, as_tenant: str | None,
        mode: Literal["replace", "merge"], dry_run: bool, reason: str, progress: Progress,
    ) -> snapshot.RestoreReport:  # fmt: skip
        """Restore tenants from a snapshot file (see :func:`kvconf.snapshot.restore`)."""
        snapshot.verify(file)  # a bad file is refused before anything is read from the store
        return await snapshot.restore(
            self.store, file, tenants=list(tenants) if tenants else None, as_tenant=as_tenant,
            mode=mode, dry_run=dry_run, reason=reason, progress=progress,
        )  # fmt: skip


def resolve(where: Target) -> Target:
    """``where``, or the ``kvconf serve`` that owns its embedded data dir (with its token)."""
    if where.server is not None:
        return where
    cfg = settings(where.redis_url, where.data_dir)
    url = serving_url(cfg.data_dir) if cfg.redis_url is None else None
    return where if url is None else Target(server=url, token=where.token)


async def _open(where: Target) -> Backend:
    where = resolve(where)
    if where.server is not None:
        return Remote(where.server, where.token)
    return Direct(await open_store(settings(where.redis_url, where.data_dir)))


def _token_needed(server: str | None, exc: Unauthorized) -> Unauthorized:
    return Unauthorized(
        f"the kvconf server at {server} needs a token: pass --token or set KVCONF_TOKEN "
        f"({exc.message})",
        server=server,
    )


@asynccontextmanager
async def opened(where: Target) -> AsyncIterator[Backend]:
    """The backend of a command for its length, closed afterwards.

    A server that wants a token the command was not given is reported as such
    (:class:`Unauthorized`, exit 8), naming ``--token`` and ``KVCONF_TOKEN``.
    """
    backend = await _open(where)
    try:
        yield backend
    except Unauthorized as exc:
        if where.token is not None:
            raise
        raise _token_needed(backend.server, exc) from exc
    finally:
        await backend.aclose()


@asynccontextmanager
async def watching(
    where: Target, tenant: str, *, namespaces: list[str] | None, check_interval: float
) -> AsyncIterator[Watcher]:
    """A started :class:`~kvconf.Watcher` of ``tenant``: over the server's SSE stream
    through a server, else on Redis (or the embedded store)."""
    where = resolve(where)
    if where.server is not None:
        watcher = Watcher(
            tenant, where.server, token=where.token, namespaces=namespaces,
            check_interval=check_interval,
        )  # fmt: skip
    else:
        watcher = Watcher(
            tenant, settings=settings(where.redis_url, where.data_dir), namespaces=namespaces,
            check_interval=check_interval,
        )  # fmt: skip
    try:
        async with watcher:
            yield watcher
    except Unauthorized as exc:
        if where.token is not None:
            raise
        raise _token_needed(where.server, exc) from exc


async def with_backend(where: Target, fn: Callable[[Backend], Awaitable[T]]) -> T:
    """Run ``fn(backend)`` with the command's backend opened."""
    async with opened(where) as backend:
        return await fn(backend)


async def with_store(where: Target, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``fn(store)`` with the command's store opened (a command that needs only Store)."""
    async with opened(where) as backend:
        return await fn(backend.store)
