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
import functools
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import fakeredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from . import _backends, _codec
from ._codec import as_text
from ._logging import request_id
from ._redis.connect import connect
from ._redis.names import (
    AUDIT_KEY,
    AUDIT_LIMIT,
    DEFAULTS_NAMESPACE,
    HIST_VERSION_DIGITS,
    TENANT_META_PATTERN,
    TENANTS_KEY,
    TenantKeys,
    hist_member_prefix,
    tenant_from_key,
    validate_key,
    validate_namespace,
)
from ._redis.names import validate_tenant as _validate_tenant
from ._redis.scripts import Scripts
from ._store.ops import MAX_ACTOR, MAX_REASON, Op, audit_text, outcome
from ._store.plan import ChangePlan, plan_across, plan_change
from .config import Settings
from .exceptions import (
    HistoryTrimmed,
    InvalidInput,
    KeyNotFound,
    TenantExists,
    TenantNotFound,
    Unavailable,
    VersionNotFound,
)
from .layers import effective_keys, resolve
from .models import (
    ChangeEvent,
    Entry,
    Explanation,
    KeySpec,
    Schema,
    TenantInfo,
    TenantState,
    Version,
    WriteResult,
)
from .schema import check_values, effective_specs, validate_schema

__all__ = ["Store"]

#: A request id the write script may copy into the event as it is (no JSON escaping).
_TRACE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
#: What a new tenant's lifecycle event may say it was made by.
_CREATE_OPS = ("create", "clone", "template")

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="Store")


def redis_errors(
    fn: Callable[Concatenate[S, P], Awaitable[R]],
) -> Callable[Concatenate[S, P], Awaitable[R]]:
    """Turn redis-py errors into :class:`Unavailable` at the store boundary."""

    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(self, *args, **kwargs)
        except RedisError as exc:
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc

    functools.update_wrapper(wrapper, fn)
    return wrapper


@functools.lru_cache(maxsize=4096)
def tenant_keys(tenant: str) -> TenantKeys:
    """Validated key names of ``tenant`` (cached: this is on every hot path)."""
    return TenantKeys(_validate_tenant(tenant))


def pairs(flat: Sequence[Any]) -> Iterable[tuple[str, bytes]]:
    it = iter(flat)
    return ((as_text(k), v) for k, v in zip(it, it, strict=True))


class TenantSchemas:
    """One tenant's schemas at one generation, with merged specs per namespace."""

    __slots__ = ("_specs", "gen", "schemas")

    def __init__(self, gen: int, schemas: dict[str, Schema]) -> None:
        self.gen = gen
        self.schemas = schemas
        self._specs: dict[str, dict[str, KeySpec]] = {}

    def specs(self, namespace: str) -> dict[str, KeySpec]:
        found = self._specs.get(namespace)
        if found is None:
            found = self._specs[namespace] = effective_specs(self.schemas, namespace)
        return found


class Store:
    """Async client of a kvconf store.

    ``Store(None)`` opens the embedded default (fakeredis in-process, shared by the
    process; see below for the environment); ``Store("redis://host:6379/0")`` a Redis server;
    ``Store("redis+cluster://host:7000")`` a Redis Cluster. Use it as an async
    context manager or call :meth:`aclose`.

    ``environ`` is the environment layer of effective reads (default:
    ``os.environ``, read live).

    ``Store("https://kvconf.example", token=...)`` talks to a ``kvconf serve``
    instead: it returns a ``kvconf._http.store.HttpStore``, a subclass with the
    same methods, results and exceptions (``token`` is for that case only).

    With no ``url``, ``settings`` nor ``client``, ``Store()`` reads the
    environment: ``KVCONF_SERVER`` (and ``KVCONF_TOKEN``) first, then
    ``KVCONF_REDIS_URL``; with neither it opens the embedded default and logs
    a warning saying so. An explicit URL (or ``settings``) always wins.
    """

    def __new__(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> Self:
        if cls is not Store:
            return object.__new__(cls)
        if url is None and settings is None and client is None:
            # No URL at all: the environment decides (see _backends.default_url).
            url = os.environ.get("KVCONF_SERVER") or None
        impl = _backends.implementation(url)
        if impl is not None:
            # A subclass of Store: Python then calls its __init__ with these arguments.
            found: Self = object.__new__(impl)
            return found
        return object.__new__(cls)

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        if token is not None:
            raise InvalidInput("token is for a kvconf server URL (http:// or https://)")
        if url is None and settings is None and client is None:
            url, _ = _backends.default_url(os.environ)
        self.settings = settings if settings is not None else Settings(redis_url=url)
        if url is None:
            url = self.settings.redis_url
        self.url = url
        self.redis: Any = client if client is not None else connect(url)
        # Pipelining talks to connections directly: not on Cluster (routing per
        # slot) nor in-process (the embedded client sees its writes through
        # execute_command, and there is no round trip to share).
        self._in_process = isinstance(self.redis, fakeredis.FakeAsyncRedis)
        pipelining = not isinstance(self.redis, RedisCluster) and not self._in_process
        self._scripts = Scripts(self.redis, pipelining=pipelining)
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._schemas: dict[str, TenantSchemas] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._scripts.aclose()
        await self.redis.aclose()

    # -- shared reads ----------------------------------------------------------

    def _write_limit(self, ops: list[Op]) -> float | None:
        """The write timeout, or None in-process: the embedded client's write may
        include the journal's fsync, which a timeout would report as a failure."""
        if self._in_process:
            return None
        return _write_timeout(self.settings.write_timeout, ops)

    @redis_errors
    async def read_state(self, tenant: str, namespaces: Iterable[str] | None = None) -> TenantState:
        """A tenant's state read atomically at one revision.

        ``namespaces`` limits the namespaces read (default: all of them).
        """
        tk = tenant_keys(tenant)
        names = [validate_namespace(n) for n in namespaces] if namespaces is not None else []
        reply = await self._scripts(
            "read_state", [tk.rev, tk.epoch, tk.meta, tk.namespaces], [tk.ns(""), *names]
        )
        if reply[0] != 1:
            raise TenantNotFound(tenant)
        spaces: dict[str, dict[str, Entry]] = {}
        for i in range(4, len(reply), 2):
            spaces[as_text(reply[i])] = {k: _codec.decode_entry(v) for k, v in pairs(reply[i + 1])}
        return TenantState(
            tenant=tenant,
            epoch=as_text(reply[2]),
            revision=int(reply[1]),
            namespaces=spaces,
            schema_gen=int(reply[3]),
        )

    async def _require_tenant(self, tk: TenantKeys) -> None:
        created, deleted = await self.redis.hmget(tk.meta, "created_at", "deleted_at")
        if created is None or deleted is not None:
            raise TenantNotFound(tk.tenant)

    async def _tenant_schemas(self, tk: TenantKeys, gen: int | None = None) -> TenantSchemas:
        cached = self._schemas.get(tk.tenant)
        if cached is not None and (gen is None or cached.gen == gen):
            return cached
        reply = await self._scripts("read_schemas", [tk.meta, tk.schema], [])
        schemas = {ns: _codec.decode_schema(raw) for ns, raw in pairs(reply[1])}
        if len(self._schemas) > 10_000:
            self._schemas.clear()
        found = self._schemas[tk.tenant] = TenantSchemas(int(reply[0]), schemas)
        return found

    @redis_errors
    async def ping(self) -> bool:
        """True when Redis answers (raises :class:`Unavailable` otherwise)."""
        return bool(await self.redis.ping())

    @redis_errors
    async def schemas(self, tenant: str) -> dict[str, Schema]:
        """Every schema of a tenant by namespace (``_defaults``: tenant-wide)."""
        tk = tenant_keys(tenant)
        await self._require_tenant(tk)
        self._schemas.pop(tenant, None)
        return dict((await self._tenant_schemas(tk)).schemas)

    async def get_schema(self, tenant: str, namespace: str) -> Schema | None:
        """The schema set on ``namespace`` itself, or None."""
        validate_namespace(namespace)
        return (await self.schemas(tenant)).get(namespace)

    @redis_errors
    async def specs(self, tenant: str, namespace: str) -> dict[str, KeySpec]:
        """The merged key specs that apply to ``namespace`` (own over ``_defaults``)."""
        validate_namespace(namespace)
        return dict((await self._tenant_schemas(tenant_keys(tenant))).specs(namespace))

    @redis_errors
    async def set_schema(
        self,
        tenant: str,
        namespace: str,
        schema: Schema | None,
        *,
        actor: str | None = None,
        reason: str = "",
    ) -> int:
        """Replace (or with None remove) a namespace's schema; returns the revision.

        Refused with :class:`SchemaViolation` when current values break it.
        """
        tk = tenant_keys(tenant)
        validate_namespace(namespace)
        body = b""
        if schema is not None:
            body = _codec.encode(validate_schema(schema))
        actor_json = audit_text("actor", actor or self.settings.actor, MAX_ACTOR)
        reason_json = audit_text("reason", reason, MAX_REASON)
        registered = False
        for _ in range(5):
            self._schemas.pop(tenant, None)
            current = await self._tenant_schemas(tk)
            await self._check_current_values(tenant, current, namespace, schema)
            if not registered:  # a schema may create the tenant: listed before it exists
                await self.redis.sadd(TENANTS_KEY, tenant)
                registered = True
            reply = await self._scripts(
                "schema",
                [tk.schema, tk.meta, tk.rev, tk.epoch, tk.log],
                [
                    namespace, body, current.gen, tenant, actor_json, reason_json,
                    _codec.now_iso(), secrets.token_hex(8), tk.changes_channel,
                    self.settings.log_limit,
                ],
            )  # fmt: skip
            if reply[0] == b"ok":
                self._schemas.pop(tenant, None)
                return int(reply[1])
            if reply[0] in (b"notenant", b"deleted"):
                raise TenantNotFound(tenant)
        raise Unavailable(f"schema of {tenant!r} kept changing")

    @redis_errors
    async def check_schema(self, tenant: str, namespace: str, schema: Schema | None) -> None:
        """Every check :meth:`set_schema` makes, without writing (a dry run).

        Raises :class:`InvalidSchema` for a bad document and
        :class:`SchemaViolation` when current values break it.
        """
        tk = tenant_keys(tenant)
        validate_namespace(namespace)
        if schema is not None:
            validate_schema(schema)
        self._schemas.pop(tenant, None)
        await self._check_current_values(tenant, await self._tenant_schemas(tk), namespace, schema)

    async def _check_current_values(
        self, tenant: str, current: TenantSchemas, namespace: str, schema: Schema | None
    ) -> None:
        proposed = dict(current.schemas)
        if schema is None:
            proposed.pop(namespace, None)
        else:
            proposed[namespace] = schema
        try:
            state = await self.read_state(tenant)
        except TenantNotFound:
            return  # no values yet; the schema script creates the tenant
        targets = (
            state.namespaces
            if namespace == DEFAULTS_NAMESPACE
            else {namespace: state.namespaces.get(namespace, {})}
        )
        for ns, entries in targets.items():
            check_values(effective_specs(proposed, ns), {k: e.value for k, e in entries.items()})

    # -- tenants ---------------------------------------------------------------

    @redis_errors
    async def create_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = "", op: str = "create"
    ) -> None:
        """Create an empty tenant; :class:`TenantExists` if it exists.

        The creation is logged as revision 1, a ``tenant`` event with ``op``
        (``create``; ``clone`` or ``template`` when values follow), ``actor``
        and ``reason``.
        """
        tk = tenant_keys(tenant)
        if op not in _CREATE_OPS:  # it goes into the event JSON as it is
            raise InvalidInput(f"op must be one of {', '.join(_CREATE_OPS)}", field="op")
        await self.redis.sadd(TENANTS_KEY, tenant)  # listed before it exists: see tenants()
        reply = await self._tenant_op(tk, "create", actor, reason, op)
        if reply[0] == b"exists":
            raise TenantExists(tenant)

    @redis_errors
    async def delete_tenant(
        self, tenant: str, *, hard: bool = False, actor: str | None = None, reason: str = ""
    ) -> None:
        """Delete a tenant: soft (restorable with :meth:`undelete_tenant`) or hard.

        A soft delete hides every value and refuses writes; history stays, and
        the change log records it (a ``tenant`` event, ``op`` ``soft_delete``).
        A hard delete removes every key of the tenant, its log included, so it
        is recorded in the global audit list (``kvconf:audit``) first.
        """
        tk = tenant_keys(tenant)
        reply = await self._tenant_op(tk, "delete", actor, reason, "soft_delete")
        if reply[0] == b"notenant" or (reply[0] == b"deleted" and not hard):
            raise TenantNotFound(tenant)
        await self.redis.srem(TENANTS_KEY, tenant)
        if hard:
            await self._audit_hard_delete(tk, actor, reason)
            batch: list[Any] = []
            async for name in self.redis.scan_iter(match=f"{tk.base}:*", count=1000):
                if as_text(name) != tk.meta:
                    batch.append(name)
                if len(batch) >= 500:
                    await self.redis.unlink(*batch)
                    batch.clear()
            if batch:
                await self.redis.unlink(*batch)
            await self.redis.unlink(tk.meta)
            self._schemas.pop(tenant, None)

    @redis_errors
    async def undelete_tenant(
        self, tenant: str, *, actor: str | None = None, reason: str = ""
    ) -> None:
        """Bring back a soft-deleted tenant with all its values (logged, ``op`` ``undelete``)."""
        tk = tenant_keys(tenant)
        await self.redis.sadd(TENANTS_KEY, tenant)  # listed before it is live: see tenants()
        reply = await self._tenant_op(tk, "undelete", actor, reason, "undelete")
        if reply[0] == b"notenant":
            raise TenantNotFound(tenant)

    async def _tenant_op(
        self, tk: TenantKeys, op: str, actor: str | None, reason: str, audit_op: str
    ) -> Any:
        return await self._scripts(
            "tenant",
            [tk.meta, tk.rev, tk.epoch, tk.namespaces, tk.log],
            [
                op, _codec.now_iso(), secrets.token_hex(8), tk.ns(""), tk.trash(), tk.tenant,
                audit_text("actor", actor or self.settings.actor, MAX_ACTOR),
                audit_text("reason", reason, MAX_REASON), tk.changes_channel,
                self.settings.log_limit, audit_op,
            ],
        )  # fmt: skip

    async def _audit_hard_delete(self, tk: TenantKeys, actor: str | None, reason: str) -> None:
        revision = await self.redis.get(tk.rev)
        record = {
            "tenant": tk.tenant, "op": "hard_delete", "actor": actor or self.settings.actor,
            "reason": reason, "ts": _codec.now_iso(), "revision": int(revision or 0),
        }  # fmt: skip
        # A list, newest first: the embedded store's journal persists lists.
        await self.redis.lpush(AUDIT_KEY, _codec.encode(record))
        await self.redis.ltrim(AUDIT_KEY, 0, AUDIT_LIMIT - 1)

    @redis_errors
    async def is_deleted(self, tenant: str) -> bool:
        """True if the tenant is soft-deleted (:meth:`undelete_tenant` would bring it back).

        Raises :class:`TenantNotFound` when there is no such tenant at all.
        """
        tk = tenant_keys(tenant)
        created, deleted = await self.redis.hmget(tk.meta, "created_at", "deleted_at")
        if created is None and deleted is None:
            raise TenantNotFound(tenant)
        return deleted is not None

    @redis_errors
    async def exists(self, tenant: str) -> bool:
        """True if the tenant exists and is not deleted."""
        try:
            await self._require_tenant(tenant_keys(tenant))
        except TenantNotFound:
            return False
        return True

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
        """Names of every live tenant, sorted.

        A tenant is listed in ``kvconf:tenants`` before its first write and
        unlisted after its deletion, so a write or delete interrupted between
        the two leaves a name without a live tenant, never a live tenant
        without a name; such names are left out here.
        """
        names = sorted(as_text(t) for t in await self.redis.smembers(TENANTS_KEY))
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hmget(tenant_keys(name).meta, "created_at", "deleted_at")
            metas = await pipe.execute(raise_on_error=False)
        # A meta of a foreign type stays listed: reading the tenant says what is wrong.
        return [
            name
            for name, meta in zip(names, metas, strict=True)
            if isinstance(meta, Exception) or (meta[0] is not None and meta[1] is None)
        ]

    @redis_errors
    async def repair_tenants(self) -> list[str]:
        """List every live tenant that holds data but is missing from ``kvconf:tenants``.

        Tenants written before registration came first (or by an older
        kvconf whose registration after the write failed) are found by one
        SCAN of tenant metadata; returns the names added. ``kvconf serve``
        runs this at start and every full snapshot before it lists tenants.
        """
        listed = {as_text(t) for t in await self.redis.smembers(TENANTS_KEY)}
        found: list[str] = []
        async for raw in self.redis.scan_iter(match=TENANT_META_PATTERN, count=5000):
            tenant = tenant_from_key(as_text(raw))
            if tenant is None or tenant in listed:
                continue
            try:
                tk = tenant_keys(tenant)
            except InvalidInput:  # not a name kvconf writes: foreign data
                continue
            try:
                created, deleted = await self.redis.hmget(tk.meta, "created_at", "deleted_at")
            except ResponseError:  # a foreign type: not a tenant kvconf made
                continue
            if created is not None and deleted is None:
                found.append(tenant)
        if found:
            await self.redis.sadd(TENANTS_KEY, *found)
        return sorted(found)

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
        """Write one key. ``expect_version`` makes it a CAS.

        ``expect_version`` is the version the key must have now: 0 means it
        must not exist, ``-1`` that it must exist at any version (HTTP's
        ``If-Match: *``); a mismatch raises :class:`VersionConflict`.
        """
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
        (0: must not exist; -1: must exist at any version); any mismatch
        raises :class:`VersionConflict` and writes nothing. ``create=False``
        refuses to create a missing tenant.
        """
        plan = self.plan(tenant, namespace, values, deletes=deletes, expect=expect)
        return await self._write(plan, actor, reason, create)

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
        plan = plan_across(
            tenant_keys(tenant),
            values,
            deletes or {},
            expect or {},
            max_keys=self.settings.max_keys_per_write,
            max_value_bytes=self.settings.max_value_bytes,
        )
        return await self._write(plan, actor, reason, create)

    def plan(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
    ) -> ChangePlan:
        """Check a change set as :meth:`commit` would, without Redis (raises the same errors).

        The schema check needs Redis and runs in :meth:`check`.
        """
        return plan_change(
            tenant_keys(tenant),
            namespace,
            values,
            deletes,
            expect or {},
            max_keys=self.settings.max_keys_per_write,
            max_value_bytes=self.settings.max_value_bytes,
        )

    @redis_errors
    async def check(
        self,
        tenant: str,
        namespace: str,
        values: Mapping[str, Any],
        *,
        deletes: Sequence[str] = (),
        expect: Mapping[str, int] | None = None,
        actor: str | None = None,
        reason: str = "",
    ) -> ChangePlan:
        """Every check :meth:`commit` makes before its write script, schema included.

        A dry run calls this and then compares with the current state: it
        refuses exactly what the write refuses, with the same errors. The
        schemas are read afresh (a dry run is rare; another process may have
        changed them since this one cached them).
        """
        plan = self.plan(tenant, namespace, values, deletes=deletes, expect=expect)
        audit_text("actor", actor or self.settings.actor, MAX_ACTOR)
        audit_text("reason", reason, MAX_REASON)
        self._schemas.pop(plan.tenant.tenant, None)
        schemas = await self._tenant_schemas(plan.tenant)
        plan.check_schema(schemas.specs)
        return plan

    async def _write(
        self, plan: ChangePlan, actor: str | None, reason: str, create: bool
    ) -> WriteResult:
        """Run the write script; reload schemas and retry when they changed meanwhile."""
        settings, tk, ops = self.settings, plan.tenant, plan.ops
        actor_json = audit_text("actor", actor or settings.actor, MAX_ACTOR)
        reason_json = audit_text("reason", reason, MAX_REASON)
        may_create = "1" if create else "0"
        limits = f"{settings.history_limit} {settings.log_limit}"
        traced = request_id.get()  # set by the API for each request: kept in the event
        if traced is not None and _TRACE_ID.fullmatch(traced):
            limits += f" {traced}"
        args: list[Any] = [
            tk.base, plan.namespace, tk.tenant, actor_json, reason_json, _codec.now_iso(), "",
        ]  # fmt: skip
        for op in ops:
            args.extend(op)
        try:  # inline rather than @redis_errors: this is the write hot path
            for _ in range(6):
                schemas = await self._tenant_schemas(tk)
                plan.check_schema(schemas.specs)
                args[6] = f"{schemas.gen} {may_create} {limits}"
                try:
                    async with asyncio.timeout(self._write_limit(ops)):
                        reply = await self._scripts.batched("write", plan.keys, args)
                except TimeoutError:
                    raise Unavailable(
                        "redis did not answer the write in time (it may still be applied)",
                        reason="timeout",
                    ) from None
                if reply[0] == b"register":  # a new tenant: listed before it holds data
                    await self.redis.sadd(TENANTS_KEY, tk.tenant)
                    may_create = "2"
                elif reply[0] == b"schema":
                    self._schemas.pop(tk.tenant, None)
                else:
                    return outcome(tk.tenant, plan.namespace, ops, reply)
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
