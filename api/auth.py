"""Bearer tokens with rights per tenant or per namespace, stored hashed in Redis.

Rights: ``read`` ⊂ ``write`` ⊂ ``admin``, and a separate ``secrets`` right to
read sensitive values unmasked. A grant's scope is

- ``"*"``: every tenant (``admin`` on ``*`` is a global admin: it manages
  tokens and tenants);
- ``"acme"``: the tenant, all of it (tenant-level routes included);
- ``"acme/ai-12"`` or ``"acme/ai-*"``: namespaces of the tenant, one by name
  or every one whose name starts with a prefix. Such a *namespace-scoped*
  token sees the tenant only through those namespaces: other namespaces are
  404, listings and streams are filtered, tenant-level operations
  (snapshots, stats, fleet, tenant rollback, delete) are 404.

The admin token from the environment (``KVCONF_ADMIN_TOKEN``) is a global
admin with ``secrets``. A token may expire (``expires_in``): after
``expires_at`` it is a 401.

Token records live in the library (:mod:`kvconf.tokens`, which ``kvconf
token`` shares); a lookup is one ``HGET`` by the token's SHA-256 (the admin
token is compared in constant time). ``last_used_at`` is written at most once
a minute per token per worker, so Redis cost stays flat under load. While
Redis does not answer (frozen, down), a token confirmed in the last 30 s is
still believed, so reads the cache can serve keep working.

With no admin token and no tokens the API runs open: every caller is the
anonymous global admin (``kvconf serve`` allows that on loopback only).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from kvconf.exceptions import Unavailable
from kvconf.tokens import (
    ALL_TENANTS,
    TokenExists,
    TokenNotFound,
    TokenRecord,
    Tokens,
    parse_scope,
    token_digest,
)

from .errors import Forbidden, Unauthorized

__all__ = [
    "ALL_TENANTS",
    "Authenticator",
    "Principal",
    "TokenExists",
    "TokenNotFound",
    "TokenRecord",
    "parse_scope",
]

_RANK = {"read": 1, "write": 2, "admin": 3}
_CACHE_SECONDS = 2.0
#: At most one ``last_used_at`` write per token per worker in this many seconds.
USED_EVERY_SECONDS = 60.0
#: How long a token lookup waits for Redis.
_LOOKUP_TIMEOUT = 1.0
#: How long past its cache time a known token is still believed while Redis
#: does not answer.
_STALE_SECONDS = 30.0


def _matches(pattern: str, namespace: str) -> bool:
    if pattern.endswith("*"):
        return namespace.startswith(pattern[:-1])
    return namespace == pattern


def _ranked(rights: Iterable[str], right: str) -> bool:
    if right == "secrets":
        return "secrets" in rights
    need = _RANK[right]
    return any(_RANK.get(r, 0) >= need for r in rights)


class Principal:
    """The caller: a token's name, its rights, and when it expires."""

    __slots__ = ("_all", "_namespaces", "expires", "grants", "name", "open")

    def __init__(
        self,
        name: str,
        grants: Mapping[str, Iterable[str]],
        *,
        open: bool = False,
        expires: float | None = None,
    ) -> None:
        self.name = name
        self.open = open
        self.expires = expires
        self.grants: dict[str, frozenset[str]] = {}
        # tenant -> [(namespace pattern, rights)] of namespace-scoped grants
        self._namespaces: dict[str, list[tuple[str, frozenset[str]]]] = {}
        for scope, rights in grants.items():
            tenant, _, pattern = scope.partition("/")
            if pattern and scope != ALL_TENANTS:
                self._namespaces.setdefault(tenant, []).append((pattern, frozenset(rights)))
            else:
                self.grants[scope] = frozenset(rights)
        self._all = dict(self.grants)
        for tenant, items in self._namespaces.items():
            for pattern, rights in items:
                self._all[f"{tenant}/{pattern}"] = rights

    @property
    def all_grants(self) -> dict[str, frozenset[str]]:
        """Every grant, tenant-level and namespace-scoped, by scope."""
        return self._all

    def _rights(self, tenant: str) -> frozenset[str]:
        return self.grants.get(tenant, frozenset()) | self.grants.get(ALL_TENANTS, frozenset())

    def _ns_rights(self, tenant: str, namespace: str) -> frozenset[str]:
        rights = self._rights(tenant)
        for pattern, more in self._namespaces.get(tenant, ()):
            if _matches(pattern, namespace):
                rights = rights | more
        return rights

    def can(self, tenant: str, right: str) -> bool:
        """True if the principal holds ``right`` on the whole tenant (rank-aware)."""
        return _ranked(self._rights(tenant), right)

    def can_ns(self, tenant: str, namespace: str, right: str) -> bool:
        """True if the principal holds ``right`` on ``namespace`` of ``tenant``."""
        return _ranked(self._ns_rights(tenant, namespace), right)

    def sees(self, tenant: str) -> bool:
        """True if the tenant is visible at all (any right on it or a namespace of it)."""
        return bool(self._rights(tenant)) or tenant in self._namespaces

    def sees_ns(self, tenant: str, namespace: str) -> bool:
        """True if ``namespace`` of ``tenant`` is visible (any right on it)."""
        return bool(self._ns_rights(tenant, namespace))

    def scoped(self, tenant: str) -> bool:
        """True when the principal sees ``tenant`` only through namespace grants."""
        return not self._rights(tenant) and tenant in self._namespaces

    def namespace_filter(self, tenant: str) -> Callable[[str], bool] | None:
        """A predicate of the visible namespaces of ``tenant`` (None: all of them)."""
        if not self.scoped(tenant):
            return None
        patterns = [p for p, rights in self._namespaces[tenant] if rights]
        return lambda ns: any(_matches(p, ns) for p in patterns)

    @property
    def is_admin(self) -> bool:
        """A global admin: admin on every tenant."""
        return "admin" in self.grants.get(ALL_TENANTS, frozenset())

    def covers(self, scope: str, right: str) -> bool:
        """True if ``right`` on all of ``scope`` (a grant scope) is held by this principal."""
        if scope == ALL_TENANTS:
            return _ranked(self.grants.get(ALL_TENANTS, frozenset()), right)
        tenant, _, pattern = scope.partition("/")
        if self.can(tenant, right):
            return True
        if not pattern:
            return False
        for held, rights in self._namespaces.get(tenant, ()):
            if not _ranked(rights, right):
                continue
            if held.endswith("*"):
                wanted = pattern[:-1] if pattern.endswith("*") else pattern
                if wanted.startswith(held[:-1]):
                    return True
            elif held == pattern:
                return True
        return False

    def require_grants(self, grants: Mapping[str, Sequence[str]]) -> None:
        """Refuse to hand out rights the principal does not hold itself.

        Granting on a scope needs ``admin`` on all of it (a tenant admin may
        grant on the tenant or any of its namespaces; a namespace admin on
        that namespace or, for a prefix grant, on narrower prefixes), and
        granting ``secrets`` needs ``secrets`` there too.
        """
        for scope, rights in grants.items():
            if scope == ALL_TENANTS:
                if not self.is_admin:
                    raise Forbidden("only a global admin may grant rights on every tenant")
                continue
            if not self.covers(scope, "admin"):
                raise Forbidden(f"granting rights on {scope!r} needs admin on it", scope=scope)
            if "secrets" in rights and not self.covers(scope, "secrets"):
                raise Forbidden(f"granting secrets on {scope!r} needs secrets on it", scope=scope)


_ADMIN_GRANTS = {ALL_TENANTS: ["admin", "secrets"]}


class Authenticator:
    """Resolves bearer tokens to principals; creates, lists and revokes tokens."""

    def __init__(self, redis: Any, admin_token: str | None, *, allow_open: bool = True) -> None:
        self.redis = redis
        self.tokens = Tokens(redis)  # the records live in the library (kvconf token shares them)
        self.admin_token = admin_token or None
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._anonymous = Principal("anonymous", _ADMIN_GRANTS, open=True)
        self._admin = Principal("admin", _ADMIN_GRANTS)
        self._open_until = 0.0
        # Open mode is for a fresh loopback server only: never on another
        # address, and once tokens have been seen it never comes back in this
        # process (revoking every token, or Redis losing its data, must not
        # turn the API into an unauthenticated admin).
        self._open = allow_open and self.admin_token is None
        # digest -> monotonic time of this worker's last ``last_used_at`` write
        self._used: dict[str, float] = {}
        self._down_until = 0.0  # Redis did not answer a lookup: believe known tokens until then
        # Single flight: concurrent callers of one expired cache entry share one
        # Redis read (a fleet of streams re-authenticating at once must not
        # empty the connection pool).
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        #: Bumped by every revocation in this process: open streams re-check
        #: their caller before the next delivery when it changed.
        self.generation = 0

    async def _once(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await make()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._inflight[key]

    async def is_open(self) -> bool:
        """True while no admin token and no token has ever been seen (cached briefly).

        Open mode only ever ends: it latches closed for the process's lifetime.
        """
        if not self._open:
            return False
        now = time.monotonic()
        if now >= self._open_until:
            count = await self._once("", self.tokens.count)
            if count > 0:
                self._open = False
            self._open_until = now + _CACHE_SECONDS
        return self._open

    async def count(self) -> int:
        """How many API tokens exist."""
        return await self.tokens.count()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header (401 if invalid or missing)."""
        if not authorization:
            if await self.is_open():
                return self._anonymous
            raise Unauthorized("a bearer token is required")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("expected 'Authorization: Bearer <token>'")
        if self.admin_token is not None and hmac.compare_digest(
            token.encode(), self.admin_token.encode()
        ):
            return self._admin
        digest = token_digest(token)
        principal = await self._lookup(digest)
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        if principal.expires is not None and time.time() >= principal.expires:
            raise Unauthorized("the token has expired")
        await self._note_use(digest)
        return principal

    async def _note_use(self, digest: str) -> None:
        # One HSET per token per worker per minute at most: a hot token costs
        # Redis nothing more than an idle one.
        now = time.monotonic()
        if now - self._used.get(digest, -USED_EVERY_SECONDS) < USED_EVERY_SECONDS:
            return
        if len(self._used) > 10_000:
            self._used.clear()
        self._used[digest] = now
        try:
            await self.tokens.note_use(digest)
        except Unavailable:  # bookkeeping: never fail a request over it
            self._used.pop(digest, None)

    async def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        # Redis is not answering (frozen, down): nobody can revoke a token
        # now, so a token confirmed a moment ago is still believed for a while
        # and reads the cache can serve keep working. Unknown tokens: 503.
        known = hit is not None and hit[1] is not None and now - hit[0] < _STALE_SECONDS
        if known and hit is not None and now < self._down_until:
            return hit[1]
        try:
            async with asyncio.timeout(_LOOKUP_TIMEOUT):
                record = await self._once(digest, lambda: self.tokens.record(digest))
        except (Unavailable, TimeoutError) as exc:
            self._down_until = time.monotonic() + _CACHE_SECONDS
            if known and hit is not None:
                return hit[1]
            if isinstance(exc, Unavailable):
                raise
            raise Unavailable("redis did not answer the token lookup", reason="timeout") from None
        principal = None
        if record is not None:
            expires = None
            if record.expires_at is not None:
                expires = datetime.fromisoformat(record.expires_at).timestamp()
            principal = Principal(record.name, record.grants, expires=expires)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal

    async def create(
        self,
        name: str,
        grants: Mapping[str, Sequence[str]],
        by: str,
        *,
        expires_at: datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """Create a token; returns its text (shown once, stored hashed) and record."""
        created = await self.tokens.create(name, grants, by, expires_at=expires_at)
        self._open_until = 0.0
        return created

    async def list(self) -> list[TokenRecord]:
        """Every token's record (never the tokens), sorted by name."""
        return await self.tokens.list()

    async def get(self, name: str) -> TokenRecord:
        """One token's record by name."""
        return await self.tokens.get(name)

    async def revoke(self, name: str) -> None:
        """Revoke a token by name (effective on other processes within 2 s)."""
        digest = await self.tokens.revoke(name)
        self._cache.pop(digest, None)
        self.generation += 1
        self._open_until = 0.0
