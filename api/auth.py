"""Bearer tokens with rights per tenant, stored hashed in Redis.

Rights: ``read`` ⊂ ``write`` ⊂ ``admin`` per tenant, and a separate
``secrets`` right to read sensitive values unmasked. A grant on ``*`` applies
to every tenant; ``admin`` on ``*`` is a global admin (manages tokens and
tenants). The admin token from the environment (``KVCONF_ADMIN_TOKEN``) is a
global admin with ``secrets``.

Tokens are ``kvc_`` + 43 random URL-safe characters; only their SHA-256 is
stored, so a token lookup is one ``HGET`` by digest (the digest compare is
the hash lookup itself; the admin token is compared in constant time):

- :data:`TOKENS_KEY` (hash): digest → token record (JSON)
- :data:`TOKEN_NAMES_KEY` (hash): token name → digest

With no admin token and no tokens the API runs open: every caller is the
anonymous global admin (``kvconf serve`` allows that on loopback only).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kvconf.exceptions import Unavailable
from kvconf.tokens import (
    ALL_TENANTS,
    TokenExists,
    TokenNotFound,
    TokenRecord,
    Tokens,
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
]

_RANK = {"read": 1, "write": 2, "admin": 3}
_CACHE_SECONDS = 2.0


class Principal:
    """The caller: a token's name and its rights."""

    __slots__ = ("grants", "name", "open")

    def __init__(
        self, name: str, grants: Mapping[str, Iterable[str]], *, open: bool = False
    ) -> None:
        self.name = name
        self.grants = {t: frozenset(r) for t, r in grants.items()}
        self.open = open

    def _rights(self, tenant: str) -> frozenset[str]:
        return self.grants.get(tenant, frozenset()) | self.grants.get(ALL_TENANTS, frozenset())

    def can(self, tenant: str, right: str) -> bool:
        """True if the principal holds ``right`` on ``tenant`` (rank-aware)."""
        rights = self._rights(tenant)
        if right == "secrets":
            return "secrets" in rights
        need = _RANK[right]
        return any(_RANK.get(r, 0) >= need for r in rights)

    def sees(self, tenant: str) -> bool:
        """True if the tenant is visible at all (any right on it)."""
        return bool(self._rights(tenant))

    @property
    def is_admin(self) -> bool:
        """A global admin: admin on every tenant."""
        return "admin" in self.grants.get(ALL_TENANTS, frozenset())

    def require_grants(self, grants: Mapping[str, Sequence[str]]) -> None:
        """Refuse to hand out rights the principal does not hold itself."""
        for tenant, rights in grants.items():
            if tenant == ALL_TENANTS:
                if not self.is_admin:
                    raise Forbidden("only a global admin may grant rights on every tenant")
                continue
            if not self.can(tenant, "admin"):
                raise Forbidden(f"granting rights on {tenant!r} needs admin on it", tenant=tenant)
            if "secrets" in rights and not self.can(tenant, "secrets"):
                raise Forbidden(f"granting secrets on {tenant!r} needs secrets on it")


_ADMIN_GRANTS = {ALL_TENANTS: ["admin", "secrets"]}
#: How long a token lookup waits for Redis.
_LOOKUP_TIMEOUT = 1.0
#: How long past its cache time a known token is still believed while Redis
#: does not answer.
_STALE_SECONDS = 30.0


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
        self._down_until = 0.0
        # Open mode is for a fresh loopback server only: never on another
        # address, and once tokens have been seen it never comes back in this
        # process (revoking every token, or Redis losing its data, must not
        # turn the API into an unauthenticated admin).
        self._open = allow_open and self.admin_token is None

    async def is_open(self) -> bool:
        """True while no admin token and no token has ever been seen (cached briefly).

        Open mode only ever ends: it latches closed for the process's lifetime.
        """
        if not self._open:
            return False
        now = time.monotonic()
        if now >= self._open_until:
            if await self.tokens.count() > 0:
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
        principal = await self._lookup(token_digest(token))
        if principal is None:
            raise Unauthorized("unknown or revoked token")
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        # Redis is not answering (frozen, down): nobody can revoke a token
        # now, so a token confirmed a moment ago is still believed for a while
        # and reads the cache can serve keep working. Unknown tokens: 503.
        known = hit is not None and hit[1] is not None and now - hit[0] < _STALE_SECONDS
        if known and now < self._down_until:
            return hit[1] if hit is not None else None
        try:
            async with asyncio.timeout(_LOOKUP_TIMEOUT):
                record = await self.tokens.record(digest)
        except (Unavailable, TimeoutError) as exc:
            self._down_until = time.monotonic() + _CACHE_SECONDS
            if known and hit is not None:
                return hit[1]
            if isinstance(exc, Unavailable):
                raise
            raise Unavailable("redis did not answer the token lookup", reason="timeout") from None
        principal = None if record is None else Principal(record.name, record.grants)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + _CACHE_SECONDS, principal)
        return principal

    async def create(self, name: str, grants: Mapping[str, Sequence[str]], by: str) -> str:
        """Create a token; returns the token text (shown once, stored hashed)."""
        token = await self.tokens.create(name, grants, by)
        self._open_until = 0.0
        return token

    async def list(self) -> list[TokenRecord]:
        """Every token's record (never the tokens), sorted by name."""
        return await self.tokens.list()

    async def get(self, name: str) -> TokenRecord:
        """One token's record by name."""
        return await self.tokens.get(name)

    async def revoke(self, name: str) -> None:
        """Revoke a token by name (effective on other processes within 2 s)."""
        self._cache.pop(await self.tokens.revoke(name), None)
        self._open_until = 0.0
