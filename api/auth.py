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

Tokens are ``kvc_`` + 43 random URL-safe characters; only their SHA-256 is
stored, so a token lookup is one ``HGET`` by digest (the digest compare is
the hash lookup itself; the admin token is compared in constant time):

- :data:`TOKENS_KEY` (hash): digest → token record (JSON)
- :data:`TOKEN_NAMES_KEY` (hash): token name → digest
- :data:`TOKENS_USED_KEY` (hash): digest → last use (ISO time), written at most
  once a minute per token per worker so Redis cost stays flat under load

With no admin token and no tokens the API runs open: every caller is the
anonymous global admin (``kvconf serve`` allows that on loopback only).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from redis.exceptions import RedisError

from kvconf._codec import now_iso
from kvconf._redis.names import (
    TOKEN_NAMES_KEY,
    TOKENS_KEY,
    TOKENS_USED_KEY,
    validate_name,
    validate_namespace,
    validate_tenant,
)
from kvconf.exceptions import Conflict, InvalidInput, NotFound, Unavailable

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

ALL_TENANTS = "*"
_RANK = {"read": 1, "write": 2, "admin": 3}
_CACHE_SECONDS = 2.0
#: At most one ``last_used_at`` write per token per worker in this many seconds.
USED_EVERY_SECONDS = 60.0


class TokenNotFound(NotFound):
    """No token of that name."""

    code = "token_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} does not exist", token=name)


class TokenRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is stored for a token (never the token itself).

    ``last_used_at`` is not part of the stored record: listings merge it in
    from :data:`TOKENS_USED_KEY`.
    """

    name: str
    grants: dict[str, list[str]]
    created_at: str = ""
    created_by: str = ""
    expires_at: str | None = None
    last_used_at: str | None = None


def parse_scope(scope: str) -> tuple[str, str | None]:
    """A grant's scope as ``(tenant, namespace pattern or None)``; validates both.

    ``"acme"`` → ``("acme", None)``; ``"acme/ai-12"`` → ``("acme", "ai-12")``;
    ``"acme/ai-*"`` → ``("acme", "ai-*")`` (a prefix; ``"acme/*"``: every
    namespace, still not the tenant-level routes).
    """
    if scope == ALL_TENANTS:
        return scope, None
    tenant, sep, pattern = scope.partition("/")
    validate_tenant(tenant)
    if not sep:
        return tenant, None
    prefix = pattern[:-1] if pattern.endswith("*") else pattern
    if prefix or not pattern.endswith("*"):
        validate_namespace(prefix)
    return tenant, pattern


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


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_ADMIN_GRANTS = {ALL_TENANTS: ["admin", "secrets"]}
_record_decoder = msgspec.json.Decoder(TokenRecord)


class Authenticator:
    """Resolves bearer tokens to principals; creates, lists and revokes tokens."""

    def __init__(self, redis: Any, admin_token: str | None, *, allow_open: bool = True) -> None:
        self.redis = redis
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

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc

    async def is_open(self) -> bool:
        """True while no admin token and no token has ever been seen (cached briefly).

        Open mode only ever ends: it latches closed for the process's lifetime.
        """
        if not self._open:
            return False
        now = time.monotonic()
        if now >= self._open_until:
            count = await self._once("", lambda: self._call(self.redis.hlen(TOKENS_KEY)))
            if count > 0:
                self._open = False
            self._open_until = now + _CACHE_SECONDS
        return self._open

    async def count(self) -> int:
        """How many API tokens exist."""
        return int(await self._call(self.redis.hlen(TOKENS_KEY)))

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
        digest = _digest(token)
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
        await self._call(self.redis.hset(TOKENS_USED_KEY, digest, now_iso()))

    async def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw = await self._once(digest, lambda: self._call(self.redis.hget(TOKENS_KEY, digest)))
        principal = None
        if raw is not None:
            record = _record_decoder.decode(raw)
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
        validate_name("token", name)
        if not grants:
            raise InvalidInput("a token needs at least one grant", field="grants")
        for scope, rights in grants.items():
            parse_scope(scope)
            if not rights:
                raise InvalidInput(f"no rights given for {scope!r}", field="grants")
        token = "kvc_" + secrets.token_urlsafe(32)
        digest = _digest(token)
        record = TokenRecord(
            name=name, grants={t: sorted(set(r)) for t, r in grants.items()},
            created_at=now_iso(), created_by=by,
            expires_at=None if expires_at is None else expires_at.isoformat(),
        )  # fmt: skip
        if not await self._call(self.redis.hsetnx(TOKEN_NAMES_KEY, name, digest)):
            raise TokenExists(name)
        await self._call(self.redis.hset(TOKENS_KEY, digest, msgspec.json.encode(record)))
        self._open_until = 0.0
        return token, record

    async def list(self) -> list[TokenRecord]:
        """Every token's record (never the tokens), sorted by name."""
        raw = await self._call(self.redis.hgetall(TOKENS_KEY))
        used = await self._call(self.redis.hgetall(TOKENS_USED_KEY))
        return sorted(
            (self._with_use(_record_decoder.decode(v), used.get(k)) for k, v in raw.items()),
            key=lambda r: r.name,
        )

    @staticmethod
    def _with_use(record: TokenRecord, used: Any) -> TokenRecord:
        if used is None:
            return record
        text = used.decode() if isinstance(used, bytes) else str(used)
        return msgspec.structs.replace(record, last_used_at=text)

    async def get(self, name: str) -> TokenRecord:
        """One token's record by name."""
        digest = await self._call(self.redis.hget(TOKEN_NAMES_KEY, name))
        raw = None if digest is None else await self._call(self.redis.hget(TOKENS_KEY, digest))
        if raw is None:
            raise TokenNotFound(name)
        used = await self._call(self.redis.hget(TOKENS_USED_KEY, digest))
        return self._with_use(_record_decoder.decode(raw), used)

    async def revoke(self, name: str) -> None:
        """Revoke a token by name (effective on other processes within 2 s)."""
        digest = await self._call(self.redis.hget(TOKEN_NAMES_KEY, name))
        if digest is None:
            raise TokenNotFound(name)
        await self._call(self.redis.hdel(TOKENS_KEY, digest))
        await self._call(self.redis.hdel(TOKEN_NAMES_KEY, name))
        await self._call(self.redis.hdel(TOKENS_USED_KEY, digest))
        text = digest.decode() if isinstance(digest, bytes) else digest
        self._cache.pop(text, None)
        self.generation += 1
        self._open_until = 0.0


class TokenExists(Conflict):
    """A token of that name exists already."""

    code = "token_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} already exists", token=name)
