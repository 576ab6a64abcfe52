"""The CLI's :class:`~kvconf.cli._backend.Backend` through a ``kvconf serve``: REST only.

Store methods go through an :class:`~kvconf._http.store.HttpStore`; the rest
through the REST routes that do the same on the server (``/tokens``,
``/tenants``, ``/diff``, ``/log``, ``/rollback``, ``/fleet``, ``/stats``), their
answers decoded into the library's own types. The server applies the token's
rights: values of sensitive keys come masked without ``secrets``, namespaces
the token may not see are 404, and the audit trail records the token's name
and the client's address (``--actor`` is not used).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import msgspec

from .. import snapshot, timeline
from .._http.client import HttpClient, reason_header
from .._http.store import HttpStore
from .._redis.names import validate_namespace, validate_tenant
from .._store.plan import plan_across
from .._watch.fleet import FleetMember
from ..exceptions import (
    Forbidden,
    InvalidInput,
    KeyConflict,
    NotFound,
    SnapshotNotFound,
    VersionConflict,
)
from ..io import HistoryImport, ImportDocument
from ..models import ChangeEvent, WriteResult
from ..schema import mask_value
from ..stats import Stats, TenantStats
from ..store import Store, tenant_keys
from ..tenants import TenantStatus
from ..tokens import TokenRecord

__all__ = ["Remote"]

#: Reports the progress of a snapshot save or restore: done, total, tenant.
Progress = Callable[[int, int, str], None]

_API = "/api/v1"


def _tenant_path(tenant: str) -> str:
    return f"{_API}/tenants/{quote(validate_tenant(tenant), safe='')}"


def _snapshot_info(doc: Any, parts: Sequence[Any], *, verified: bool) -> snapshot.SnapshotInfo:
    """A snapshot route's answer (and the parts of the tenants asked for) as the library's type."""
    tenants = [msgspec.convert(p, snapshot.TenantSummary) for p in parts]
    return snapshot.SnapshotInfo(
        path=doc["name"], format=doc["format"],
        created_at=msgspec.convert(doc["created_at"], datetime), size=doc["size"] or 0,
        label=doc["label"], tenants=tenants, keys=sum(t.keys for t in tenants),
        versions=sum(t.versions for t in tenants), verified=verified,
    )  # fmt: skip


class Remote:
    """The CLI's operations as requests to a kvconf server."""

    def __init__(self, url: str, token: str | None) -> None:
        self.server: str | None = url
        self.store: Store = HttpStore(url, token=token)
        self._http = HttpClient(url, token)

    async def aclose(self) -> None:
        """Close both connection pools."""
        try:
            await self.store.aclose()
        finally:
            await self._http.aclose()

    async def tenant_states(self, include_deleted: bool) -> list[TenantStatus]:
        """``GET /tenants``: the tenants the token sees (and soft-deleted ones, if asked)."""
        params = {"include_deleted": "true"} if include_deleted else None
        doc = await self._http.request("GET", f"{_API}/tenants", params=params)
        if "states" in doc:
            return [msgspec.convert(s, TenantStatus) for s in doc["states"]]
        return [TenantStatus(name, "live") for name in sorted(doc["tenants"])]

    async def provision(
        self, name: str, *, source: str | None, whole: bool,
        overrides: Mapping[str, Mapping[str, Any]], actor: str | None, reason: str,
    ) -> int:  # fmt: skip
        """``POST /tenants``: empty, ``template`` or ``clone_from``, with overrides."""
        body: dict[str, Any] = {
            "name": validate_tenant(name),
            "reason": reason,
            "overrides": {ns: dict(v) for ns, v in overrides.items()},
        }
        if source is not None:
            body["clone_from" if whole else "template"] = source
        doc = await self._http.request("POST", f"{_API}/tenants", body=body)
        revision: int = doc["revision"]
        return revision

    async def delete_tenant(self, name: str, *, hard: bool) -> str | None:
        """``DELETE /tenants/{t}``; a hard delete returns the server's snapshot path."""
        params = {"hard": "true"} if hard else None
        doc = await self._http.request("DELETE", _tenant_path(name), params=params)
        snap = doc.get("snapshot")
        return None if snap is None else str(snap["path"])

    async def diff(
        self, tenant: str, from_revision: int, to_revision: int | None, namespace: str | None
    ) -> timeline.Diff:
        """``GET .../diff``: keys that differ between two revisions."""
        path = _tenant_path(tenant)
        if namespace is not None:
            path += f"/namespaces/{quote(validate_namespace(namespace), safe='')}"
        params: dict[str, Any] = {"from": from_revision}
        if to_revision is not None:
            params["to"] = to_revision
        doc = await self._http.request("GET", f"{path}/diff", params=params)
        return timeline.Diff(
            tenant=tenant,
            from_revision=doc["from_revision"],
            to_revision=doc["to_revision"],
            changes=[msgspec.convert(c, timeline.KeyDiff) for c in doc["changes"]],
        )

    async def read_log(self, tenant: str, since: int, limit: int) -> list[timeline.LogEvent]:
        """``GET .../log``: records after ``since`` the token may see, oldest first."""
        params = {"since": since, "limit": limit}
        doc = await self._http.request("GET", f"{_tenant_path(tenant)}/log", params=params)
        return [msgspec.convert(e, ChangeEvent) for e in doc["events"]]

    async def _rollback(
        self, tenant: str, to_revision: int, namespace: str | None, reason: str, dry_run: bool
    ) -> Any:
        body = {"to_revision": to_revision, "namespace": namespace, "reason": reason}
        params = {"dry_run": "true"} if dry_run else None
        path = f"{_tenant_path(tenant)}/rollback"
        return await self._http.request("POST", path, params=params, body=body)

    async def rollback(
        self, tenant: str, to_revision: int, *, namespace: str | None, actor: str | None,
        reason: str,
    ) -> list[WriteResult]:  # fmt: skip
        """``POST .../rollback``: one atomic change set, as :func:`kvconf.timeline.rollback`."""
        doc = await self._rollback(tenant, to_revision, namespace, reason, dry_run=False)
        return [
            WriteResult(tenant=tenant, namespace=c["namespace"], revision=c["revision"],
                        epoch=c.get("epoch", ""), versions=c["versions"])
            for c in doc["commits"]
        ]  # fmt: skip

    async def rollback_preview(
        self, tenant: str, to_revision: int, *, namespace: str | None, show_secrets: bool
    ) -> list[dict[str, Any]]:
        """``POST .../rollback?dry_run=true``: the rows a rollback would change."""
        doc = await self._rollback(tenant, to_revision, namespace, "", dry_run=True)
        return await self._preview_rows(tenant, doc["namespaces"], show_secrets)

    async def changes_preview(
        self, tenant: str, values: Mapping[str, Mapping[str, Any]],
        deletes: Mapping[str, Sequence[str]], expect: Mapping[str, Mapping[str, int]], *,
        create: bool, actor: str | None, reason: str, show_secrets: bool,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """``POST .../changes?dry_run=true``: the rows a change set across namespaces
        would change; an ``expect`` mismatch is a :class:`VersionConflict` naming
        ``namespace/key``, as the write's."""
        settings = self.store.settings
        plan_across(  # checked locally first, as HttpStore.commit_across does
            tenant_keys(validate_tenant(tenant)), values, deletes, expect,
            max_keys=settings.max_keys_per_write, max_value_bytes=settings.max_value_bytes,
        )  # fmt: skip
        body = {
            "values": {ns: dict(v) for ns, v in values.items()},
            "deletes": {ns: list(d) for ns, d in deletes.items()},
            "expect": {ns: dict(e) for ns, e in expect.items()},
            "reason": reason, "create": create,
        }  # fmt: skip
        path = f"{_tenant_path(tenant)}/changes"
        doc = await self._http.request("POST", path, params={"dry_run": "true"}, body=body)
        conflicts = [
            KeyConflict(f"{p['namespace']}/{c['key']}", c["expected"], c["actual"])
            for p in doc["namespaces"] for c in p["conflicts"]
        ]  # fmt: skip
        if conflicts:
            raise VersionConflict(tenant, "*", sorted(conflicts, key=lambda c: c.key))
        return await self._preview_rows(tenant, doc["namespaces"], show_secrets)

    async def _preview_rows(
        self, tenant: str, previews: list[dict[str, Any]], show_secrets: bool
    ) -> list[dict[str, Any]]:
        """A dry run's per-namespace previews as the rows :mod:`._preview` prints, masked
        without ``show_secrets`` even when the token may read secrets."""
        rows: list[dict[str, Any]] = []
        for preview in previews:
            ns = preview["namespace"]
            specs = {} if show_secrets else await self.store.specs(tenant, ns)
            for c in sorted(preview["changes"], key=lambda c: str(c["key"])):
                spec = specs.get(c["key"])
                change = c["change"]
                if change == "unchanged" and mask_value(0, spec) != 0:
                    change = "changed"  # "unchanged" would confirm a guessed secret
                rows.append({
                    "namespace": ns, "key": c["key"], "change": change,
                    "old": mask_value(c["old"], spec) if c["old_version"] else None,
                    "old_version": c["old_version"],
                    "new": None if change == "removed" else mask_value(c["new"], spec),
                })  # fmt: skip
        return rows

    async def fleet(self, tenant: str) -> list[FleetMember]:
        """``GET .../fleet``: the tenant's watchers."""
        doc = await self._http.request("GET", f"{_tenant_path(tenant)}/fleet")
        return [msgspec.convert(m, FleetMember) for m in doc["watchers"]]

    async def create_token(self, name: str, grants: dict[str, list[str]], actor: str | None) -> str:
        """``POST /tokens``: a token with at most the caller's own rights; its text."""
        body = {"name": name, "grants": grants}
        doc = await self._http.request("POST", f"{_API}/tokens", body=body)
        text: str = doc["token"]
        return text

    async def tokens(self) -> list[TokenRecord]:
        """``GET /tokens``: the tokens the caller may see."""
        doc = await self._http.request("GET", f"{_API}/tokens")
        return [msgspec.convert(t, TokenRecord) for t in doc["tokens"]]

    async def revoke_token(self, name: str) -> None:
        """``DELETE /tokens/{name}``."""
        await self._http.request("DELETE", f"{_API}/tokens/{quote(name, safe='')}")

    async def stats(self) -> Stats:
        """``GET /stats`` (a global admin token)."""
        return msgspec.convert(await self._http.request("GET", f"{_API}/stats"), Stats)

    async def tenant_stats(self, tenant: str) -> TenantStats:
        """``GET /tenants/{t}/stats``."""
        doc = await self._http.request("GET", f"{_tenant_path(tenant)}/stats")
        return msgspec.convert(doc, TenantStats)

    async def import_history(
        self, tenant: str, document: ImportDocument, *, replace: bool, dry_run: bool,
        actor: str | None, reason: str,
    ) -> HistoryImport:  # fmt: skip
        """Not available: no REST route writes a key's kept versions."""
        raise InvalidInput(
            "import --preserve-versions is not available through a kvconf server "
            "(the REST API writes new versions only); run it against Redis",
            field="preserve_versions",
        )

    async def save_snapshots(
        self, tenants: Sequence[str] | None, directory: Path | None, label: str,
        progress: Progress,
    ) -> list[snapshot.SnapshotInfo]:  # fmt: skip
        """``POST /tenants/{t}/snapshots``: one file per tenant, in the server's data dir."""
        if directory is not None:
            raise InvalidInput("--dir is a local directory: not available through a kvconf "
                               "server (it saves under its own data dir)", field="dir")  # fmt: skip
        names = list(tenants) if tenants else await self.store.tenants()
        saved = []
        for i, tenant in enumerate(names):
            path = f"{_tenant_path(tenant)}/snapshots"
            doc = await self._http.request("POST", path, params={"label": label})
            saved.append(_snapshot_info(doc, [doc["tenant"]], verified=True))
            progress(i + 1, len(names), tenant)
        return saved

    async def list_snapshots(self, tenants: Sequence[str] | None) -> list[snapshot.SnapshotInfo]:
        """``GET /tenants/{t}/snapshots`` for each tenant: the server's snapshots, oldest first.

        Without ``tenants``: every tenant the token sees, skipping those it may
        not administer (:class:`Forbidden` if it administers none of them). A
        file that holds several of the tenants is one entry with their parts;
        the server never shows the part of a tenant the token does not administer.
        """
        names = list(dict.fromkeys(tenants)) if tenants else await self.store.tenants()
        files: dict[str, tuple[Any, list[Any]]] = {}
        refused: Forbidden | None = None
        answered = 0
        for tenant in names:
            try:
                doc = await self._http.request("GET", f"{_tenant_path(tenant)}/snapshots")
            except Forbidden as exc:  # a right below admin on the tenant
                if tenants:
                    raise
                refused = exc
                continue
            except NotFound:  # deleted since GET /tenants, or a namespace-scoped token
                if tenants:
                    raise
                continue
            answered += 1
            for found in doc["snapshots"]:
                files.setdefault(found["name"], (found, []))[1].append(found["tenant"])
        if refused is not None and not answered:
            raise refused
        return [_snapshot_info(doc, parts, verified=False) for doc, parts in
                (files[name] for name in sorted(files))]  # fmt: skip

    async def verify_snapshot(
        self, name: str, tenants: Sequence[str] | None
    ) -> snapshot.SnapshotInfo:
        """``POST /tenants/{t}/snapshots/{name}/verify`` for each tenant holding it.

        ``name`` is a snapshot the server holds (as ``kvconf snapshot save
        --server`` prints it). Without ``tenants``: the tenants the token sees
        that the file holds (:class:`SnapshotNotFound` if none). The server reads
        the whole file each time; a damaged or unsupported one is a :class:`SnapshotError`.
        """
        if not tenants:
            listed = [i for i in await self.list_snapshots(None) if i.path == name]
            if not listed:
                raise SnapshotNotFound(
                    f"no snapshot {name!r} on the server holds a tenant this token administers",
                    name=name,
                )
            tenants = [t.tenant for t in listed[0].tenants]
        docs = []
        for tenant in dict.fromkeys(tenants):  # each once, however often named
            path = f"{_tenant_path(tenant)}/snapshots/{quote(name, safe='')}/verify"
            docs.append(await self._http.request("POST", path))
        verified = all(doc["verified"] for doc in docs)
        return _snapshot_info(docs[0], [doc["tenant"] for doc in docs], verified=verified)

    async def restore_snapshot(
        self, file: Path, *, tenants: Sequence[str] | None, as_tenant: str | None,
        mode: Literal["replace", "merge"], dry_run: bool, reason: str, progress: Progress,
    ) -> snapshot.RestoreReport:  # fmt: skip
        """``POST /tenants/{t}/snapshots/{name}/restore`` for each ``--tenant``.

        ``file`` names a snapshot the server lists (``kvconf snapshot save
        --server`` prints it); the server reads its own file.
        """
        if as_tenant is not None:
            raise InvalidInput("--as is not available through a kvconf server", field="as")
        if not tenants or file.name != str(file):
            raise InvalidInput(
                "through a kvconf server, restore takes the name of a snapshot the server "
                "holds (as `snapshot save --server` prints it) and --tenant", field="file"
            )  # fmt: skip
        params = {"mode": mode, "dry_run": "true" if dry_run else "false"}
        headers = reason_header(reason)
        rows: list[snapshot.TenantRestore] = []
        for i, tenant in enumerate(tenants):
            path = f"{_tenant_path(tenant)}/snapshots/{quote(file.name, safe='')}/restore"
            doc = await self._http.request("POST", path, params=params, headers=headers)
            rows.extend(msgspec.convert(r, snapshot.TenantRestore) for r in doc["restored"])
            progress(i + 1, len(tenants), tenant)
        return snapshot.RestoreReport(path=file.name, dry_run=dry_run, tenants=rows)
