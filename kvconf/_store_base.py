"""The shared base of :class:`~kvconf.store.Store`: connection, settings, tenant checks.

:class:`StoreBase` holds the client, the scripts and the schema cache, and
the reads every other part builds on (``read_state``, the tenant check, the
cached schemas); ``_store_admin.py`` adds schemas and tenant lifecycle on
top, ``store.py`` the key reads and writes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import fakeredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from . import _codec
from ._codec import as_text
from ._redis.connect import connect
from ._redis.names import TenantKeys, validate_namespace
from ._redis.names import validate_tenant as _validate_tenant
from ._redis.scripts import Scripts
from .config import Settings
from .exceptions import TenantNotFound, Unavailable
from .models import Entry, KeySpec, Schema, TenantState
from .schema import effective_specs

__all__ = ["StoreBase", "TenantSchemas", "pairs", "redis_errors", "tenant_keys"]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="StoreBase")


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


class StoreBase:
    """Connection, settings and the tenant checks every part of :class:`Store` shares.

    Constructed as :class:`~kvconf.Store` (see there): a URL or settings,
    optionally a ready client, and the environment layer of effective reads.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        client: Any = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings(redis_url=url)
        if url is None:
            url = self.settings.redis_url
        self.url = url
        self.redis: Any = client if client is not None else connect(url)
        # Pipelining talks to connections directly: not on Cluster (routing per
        # slot) nor in-process (the embedded client sees its writes through
        # execute_command, and there is no round trip to share).
        pipelining = not isinstance(self.redis, RedisCluster | fakeredis.FakeAsyncRedis)
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
