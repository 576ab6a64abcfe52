"""Store: the async core. Reads, atomic versioned writes, CAS, history, layers.

>>> async with Store() as store:                      # embedded default
...     await store.set("acme", "ai-12", "stale_timeout", 30, actor="ops")
...     entry = await store.get("acme", "ai-12", "stale_timeout")
...     entry.value, entry.version
(30, 1)

Every write goes through one server-side script (``lua/write.lua``) that
checks all preconditions, writes values and history, bumps the tenant
revision, logs and publishes the change event: one round trip, all or nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError

from . import _codec
from ._codec import as_text
from ._redis.names import (
    DEFAULTS_NAMESPACE,
    HIST_VERSION_DIGITS,
    TENANTS_KEY,
    TenantKeys,
    hist_member_prefix,
    validate_key,
    validate_namespace,
)
from ._store.ops import MAX_ACTOR, MAX_REASON, Op, audit_text, change_ops, check_count, outcome
from ._store_admin import AdminOps
from ._store_base import redis_errors
from ._store_base import tenant_keys as tenant_keys  # re-exported: callers name it from here
from .exceptions import (
    HistoryTrimmed,
    InvalidInput,
    KeyNotFound,
    TenantNotFound,
    Unavailable,
    VersionNotFound,
)
from .layers import effective_keys, resolve
from .models import ChangeEvent, Entry, Explanation, KeySpec, TenantInfo, Version, WriteResult
from .schema import check_values

__all__ = ["Store"]


class Store(AdminOps):
    """Async client of a kvconf store.

    ``Store()`` opens the embedded default (fakeredis in-process, shared by the
    process); ``Store("redis://host:6379/0")`` a Redis server;
    ``Store("redis+cluster://host:7000")`` a Redis Cluster. Use it as an async
    context manager or call :meth:`aclose`.

    ``environ`` is the environment layer of effective reads (default:
    ``os.environ``, read live). Schemas and tenants: :class:`AdminOps`.
    """

    # -- reads ---------------------------------------------------------------

    async def get(self, tenant: str, namespace: str, key: str) -> Entry:
        """The current entry of one key; :class:`KeyNotFound` if it has none."""
        tk = tenant_keys(tenant)
        try:  # inline rather than @redis_errors: this is the hottest read
            raw = await self._scripts.batched_command(
                "HGET", tk.ns(validate_namespace(namespace)), validate_key(key)
            )
            if raw is None:
                await self._require_tenant(tk)
                raise KeyNotFound(tenant, namespace, [key])
        except RedisError as exc:
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
        return _codec.decode_entry(raw)

    @redis_errors
    async def get_namespace(self, tenant: str, namespace: str) -> dict[str, Entry]:
        """Every current entry of a namespace (empty if it has none)."""
        tk = tenant_keys(tenant)
        raw = await self.redis.hgetall(tk.ns(validate_namespace(namespace)))
        if not raw:
            await self._require_tenant(tk)
        return {as_text(k): _codec.decode_entry(v) for k, v in raw.items()}

    @redis_errors
    async def tenants(self) -> list[str]:
        """Names of every live tenant, sorted."""
        return sorted(as_text(t) for t in await self.redis.smembers(TENANTS_KEY))

    @redis_errors
    async def namespaces(self, tenant: str) -> list[str]:
        """Names of a tenant's namespaces that were ever written, sorted."""
        tk = tenant_keys(tenant)
        names = await self.redis.smembers(tk.namespaces)
        if not names:
            await self._require_tenant(tk)
        return sorted(as_text(n) for n in names)

    @redis_errors
    async def revision(self, tenant: str) -> int:
        """The tenant's current revision (0 before its first write)."""
        tk = tenant_keys(tenant)
        raw = await self.redis.get(tk.rev)
        if raw is None:
            await self._require_tenant(tk)
            return 0
        return int(raw)

    @redis_errors
    async def info(self, tenant: str) -> TenantInfo:
        """A tenant's revision, epoch, namespaces and creation time."""
        tk = tenant_keys(tenant)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(tk.meta, "created_at", "deleted_at")
            pipe.get(tk.rev)
            pipe.get(tk.epoch)
            pipe.smembers(tk.namespaces)
            (created, deleted), rev, epoch, names = await pipe.execute()
        if created is None or deleted is not None:
            raise TenantNotFound(tenant)
        return TenantInfo(
            tenant=tenant,
            revision=int(rev or 0),
            epoch=as_text(epoch or b""),
            namespaces=sorted(as_text(n) for n in names),
            created_at=datetime.fromisoformat(as_text(created)),
        )

    @redis_errors
    async def changes_since(
        self, tenant: str, revision: int, *, limit: int = 1000
    ) -> list[ChangeEvent]:
        """Change events after ``revision``, oldest first, at most ``limit``.

        Raises :class:`HistoryTrimmed` when the log no longer holds
        ``revision + 1``: the caller must resynchronise from full state.
        """
        tk = tenant_keys(tenant)
        if revision < 0 or limit < 1:
            raise InvalidInput("revision must be >= 0 and limit >= 1")
        reply = await self._scripts("read_log", [tk.rev, tk.log, tk.meta], [revision, limit])
        if reply[0] != 1:
            raise TenantNotFound(tenant)
        current, oldest = int(reply[1]), int(reply[2])
        if revision < current and (oldest == 0 or oldest > revision + 1):
            raise HistoryTrimmed(tenant, revision, oldest)
        return [_codec.decode_event(e) for e in reply[3:]]

    @redis_errors
    async def history(
        self,
        tenant: str,
        namespace: str,
        key: str,
        *,
        limit: int = 20,
        before: int | None = None,
    ) -> list[Version]:
        """Versions of a key, newest first; page with ``before=<oldest seen>``."""
        tk = tenant_keys(tenant)
        hist = tk.hist(validate_namespace(namespace))
        if limit < 1 or (before is not None and before < 1):
            raise InvalidInput("limit must be >= 1 and before >= 1")
        prefix = hist_member_prefix(validate_key(key))
        top = b"[" + prefix + b"\xff" if before is None else b"(" + hist_member_prefix(key, before)
        raw = await self.redis.zrevrangebylex(hist, top, b"[" + prefix, start=0, num=limit)
        if not raw and before is None:
            await self._require_tenant(tk)
            raise KeyNotFound(tenant, namespace, [key])
        skip = len(prefix) + HIST_VERSION_DIGITS + 1
        return [_codec.decode_version(r[skip:]) for r in raw]

    @redis_errors
    async def version(self, tenant: str, namespace: str, key: str, version: int) -> Version:
        """One version of a key from its history."""
        tk = tenant_keys(tenant)
        hist = tk.hist(validate_namespace(namespace))
        prefix = hist_member_prefix(validate_key(key), version)
        raw = await self.redis.zrangebylex(hist, b"[" + prefix, b"[" + prefix + b"\xff")
        if not raw:
            await self._require_tenant(tk)
            raise VersionNotFound(tenant, namespace, key, version)
        return _codec.decode_version(raw[0][len(prefix) :])

    # -- effective reads -------------------------------------------------------

    async def explain(self, tenant: str, namespace: str) -> dict[str, Explanation]:
        """Every effective key of a namespace with its winning layer and shadows."""
        own, defaults, specs = await self._layer_inputs(tenant, namespace)
        prefix = self.settings.defaults_env_prefix
        return {
            key: resolve(key, own, defaults, self._environ, prefix, specs)
            for key in effective_keys(own, defaults, specs)
        }

    async def explain_key(self, tenant: str, namespace: str, key: str) -> Explanation:
        """The effective value of one key, with its winning layer and shadows."""
        validate_key(key)
        own, defaults, specs = await self._layer_inputs(tenant, namespace)
        return resolve(key, own, defaults, self._environ, self.settings.defaults_env_prefix, specs)

    async def _layer_inputs(
        self, tenant: str, namespace: str
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, KeySpec]]:
        """The namespace's values, the tenant defaults and the specs, read at one revision."""
        state = await self.read_state(tenant, [namespace, DEFAULTS_NAMESPACE])
        specs = (await self._tenant_schemas(tenant_keys(tenant), state.schema_gen)).specs(namespace)
        own = {k: e.value for k, e in state.namespaces.get(namespace, {}).items()}
        defaults: dict[str, Any] = {}
        if namespace != DEFAULTS_NAMESPACE:
            defaults = {k: e.value for k, e in state.namespaces.get(DEFAULTS_NAMESPACE, {}).items()}
        return own, defaults, specs

    async def effective(self, tenant: str, namespace: str) -> dict[str, Any]:
        """The effective value of every key of a namespace (see :mod:`kvconf.layers`)."""
        return {k: e.value for k, e in (await self.explain(tenant, namespace)).items()}

    # -- writes ----------------------------------------------------------------

    async def set(
        self,
        tenant: str,
        namespace: str,
        key: str,
        value: Any,
        *,
        expect_version: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Write one key. ``expect_version`` (0: must not exist) makes it a CAS."""
        expect = None if expect_version is None else {key: expect_version}
        return await self.commit(
            tenant, namespace, {key: value}, expect=expect, actor=actor, reason=reason
        )

    async def set_many(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Write several keys of one namespace as one change set (one revision)."""
        return await self.commit(
            tenant, namespace, values, expect=expect, actor=actor, reason=reason
        )

    async def delete(
        self,
        tenant: str,
        namespace: str,
        keys: str | Iterable[str],
        *,
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Delete keys (each gets a tombstone version); all must exist."""
        names = [keys] if isinstance(keys, str) else list(keys)
        return await self.commit(
            tenant, namespace, {}, deletes=names, expect=expect, actor=actor, reason=reason
        )

    async def rollback(
        self,
        tenant: str,
        namespace: str,
        key: str,
        to_version: int,
        *,
        expect_version: int | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> WriteResult:
        """Make ``to_version``'s value current again, as a new version.

        Rolling back to a tombstone deletes the key. The old value is checked
        against today's schema like any other write.
        """
        target = await self.version(tenant, namespace, key, to_version)
        reason = reason or f"rollback to version {to_version}"
        expect = None if expect_version is None else {key: expect_version}
        if target.deleted:
            return await self.commit(
                tenant, namespace, {}, deletes=[key], expect=expect, actor=actor, reason=reason
            )
        return await self.commit(
            tenant, namespace, {key: target.value}, expect=expect, actor=actor, reason=reason
        )

    async def commit(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
        create: bool = True,
    ) -> WriteResult:
        """Commit one change set: set ``values`` and delete ``deletes`` atomically.

        ``expect`` maps keys of the change set to the version each must have
        (0: must not exist); any mismatch raises :class:`VersionConflict` and
        writes nothing. ``create=False`` refuses to create a missing tenant.
        """
        tk = tenant_keys(tenant)
        validate_namespace(namespace)
        check_count(
            len(values) + len(deletes), self.settings.max_keys_per_write
        )  # before encoding any value
        ops = change_ops(values, deletes, expect or {}, self.settings.max_value_bytes)
        keys = [tk.ns(namespace), tk.hist(namespace)]
        return await self._write(
            tk, namespace, keys, ops, {namespace: values}, actor, reason, create
        )

    async def commit_across(
        self,
        tenant: str,
        values: Mapping[str, Mapping[str, Any]],
        *,
        deletes: Mapping[str, Sequence[str]] | None = None,
        expect: Mapping[str, Mapping[str, int]] | None = None,
        actor: str | None = None,
        reason: str = "",
        create: bool = True,
    ) -> WriteResult:
        """Commit one change set spanning namespaces: one revision, all or nothing.

        ``values``, ``deletes`` and ``expect`` are keyed by namespace. The
        change event's ``namespace`` is ``"*"`` and each of its changes names
        its own namespace; the result's versions (and any conflict) name keys
        as ``"namespace/key"``.
        """
        tk = tenant_keys(tenant)
        deletes = deletes or {}
        expect = expect or {}
        unknown = set(expect) - set(values) - set(deletes)
        if unknown:
            raise InvalidInput(f"expected versions given for namespaces not in the change set: "
                               f"{sorted(unknown)}")  # fmt: skip
        check_count(
            sum(len(v) for v in values.values()) + sum(len(d) for d in deletes.values()),
            self.settings.max_keys_per_write,
        )  # before encoding any value
        ops: list[Op] = []
        for namespace in {**dict.fromkeys(values), **dict.fromkeys(deletes)}:
            validate_namespace(namespace)
            for key, op, data in change_ops(
                values.get(namespace, {}),
                deletes.get(namespace, ()),
                expect.get(namespace, {}),
                self.settings.max_value_bytes,
            ):
                ops.append((f"{namespace}/{key}", op, data))
        first = ops[0][0].partition("/")[0]
        keys = [tk.ns(first), tk.hist(first)]
        return await self._write(tk, "*", keys, ops, values, actor, reason, create)

    async def _write(
        self,
        tk: TenantKeys,
        namespace: str,
        keys: list[str],
        ops: list[Op],
        checks: Mapping[str, Mapping[str, Any]],
        actor: str | None,
        reason: str,
        create: bool,
    ) -> WriteResult:
        """Run the write script; reload schemas and retry when they changed meanwhile."""
        settings = self.settings
        actor_json = audit_text("actor", actor or settings.actor, MAX_ACTOR)
        reason_json = audit_text("reason", reason, MAX_REASON)
        limits = f"{1 if create else 0} {settings.history_limit} {settings.log_limit}"
        args: list[Any] = [
            tk.base, namespace, tk.tenant, actor_json, reason_json, _codec.now_iso(), "",
        ]  # fmt: skip
        for op in ops:
            args.extend(op)
        try:  # inline rather than @redis_errors: this is the write hot path
            for _ in range(5):
                schemas = await self._tenant_schemas(tk)
                for ns, values in checks.items():
                    if values:
                        check_values(schemas.specs(ns), values)
                args[6] = f"{schemas.gen} {limits}"
                try:
                    async with asyncio.timeout(_write_timeout(settings.write_timeout, ops)):
                        reply = await self._scripts.batched("write", keys, args)
                except TimeoutError:
                    raise Unavailable(
                        "redis did not answer the write in time (it may still be applied)",
                        reason="timeout",
                    ) from None
                if reply[0] != b"schema":
                    result = outcome(tk.tenant, namespace, ops, reply)
                    if reply[3] == 1:  # the write created the tenant
                        await self.redis.sadd(TENANTS_KEY, tk.tenant)
                    return result
                self._schemas.pop(tk.tenant, None)
        except RedisError as exc:
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc
        raise Unavailable(f"schema of {tk.tenant!r} kept changing during the write")


def _write_timeout(base: float, ops: list[Op]) -> float | None:
    """``base`` seconds (None: no limit), plus 1 s per 50 MB of values: sending
    a big change set is not a sign of a frozen server."""
    if not base:
        return None
    size = 0
    for op in ops:
        size += len(op[2])
    return base + size / 50e6
