"""API tokens as stored in Redis: create, list, get, revoke (the library side of auth).

The REST app authenticates callers with them (``api/auth.py``'s
``Authenticator`` composes :class:`Tokens`); ``kvconf token`` manages them
from a shell. Tokens are ``kvc_`` + 43 random URL-safe characters; only their
SHA-256 is stored:

- ``TOKENS_KEY`` (hash): digest → :class:`TokenRecord` (JSON)
- ``TOKEN_NAMES_KEY`` (hash): token name → digest
- ``TOKENS_USED_KEY`` (hash): digest → when last used (merged into listings)

A grant's scope is a tenant (``"acme"``), a namespace of it
(``"acme/ai-12"``) or a prefix of namespaces (``"acme/ai-*"``), or ``"*"``
for every tenant (:func:`parse_scope`).

>>> tokens = Tokens(store.redis)
>>> text, record = await tokens.create("ci", {"acme": ["write"]}, by="ops")
>>> [r.name for r in await tokens.list()]
['ci']
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec
from redis.exceptions import RedisError

from ._codec import as_text, now_iso
from ._redis.names import (
    TOKEN_NAMES_KEY,
    TOKENS_KEY,
    TOKENS_USED_KEY,
    validate_name,
    validate_namespace,
    validate_tenant,
)
from .exceptions import Conflict, InvalidInput, NotFound, Unavailable

__all__ = [
    "ALL_TENANTS",
    "TokenExists",
    "TokenNotFound",
    "TokenRecord",
    "Tokens",
    "parse_scope",
    "token_digest",
]

#: A grant on this "tenant" applies to every tenant.
ALL_TENANTS = "*"


class TokenNotFound(NotFound):
    """No token of that name."""

    code = "token_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} does not exist", token=name)


class TokenExists(Conflict):
    """A token of that name exists already."""

    code = "token_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"token {name!r} already exists", token=name)


class TokenRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is stored for a token (never the token itself).

    ``last_used_at`` is not part of the stored record: listings merge it in
    from ``TOKENS_USED_KEY``.
    """

    name: str
    grants: dict[str, list[str]]
    created_at: str = ""
    created_by: str = ""
    expires_at: str | None = None
    last_used_at: str | None = None


_record_decoder = msgspec.json.Decoder(TokenRecord)


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


def token_digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored and looked up by."""
    return hashlib.sha256(token.encode()).hexdigest()


class Tokens:
    """The token records in one Redis (any redis-py asyncio client)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except RedisError as exc:
            raise Unavailable(f"redis: {exc}", reason=type(exc).__name__) from exc

    async def count(self) -> int:
        """How many tokens exist."""
        return int(await self._call(self.redis.hlen(TOKENS_KEY)))

    async def record(self, digest: str) -> TokenRecord | None:
        """The record of a token by its digest, or None."""
        raw = await self._call(self.redis.hget(TOKENS_KEY, digest))
        return None if raw is None else _record_decoder.decode(raw)

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
        digest = token_digest(token)
        record = TokenRecord(
            name=name, grants={t: sorted(set(r)) for t, r in grants.items()},
            created_at=now_iso(), created_by=by,
            expires_at=None if expires_at is None else expires_at.isoformat(),
        )  # fmt: skip
        if not await self._call(self.redis.hsetnx(TOKEN_NAMES_KEY, name, digest)):
            raise TokenExists(name)
        await self._call(self.redis.hset(TOKENS_KEY, digest, msgspec.json.encode(record)))
        return token, record

    async def note_use(self, digest: str) -> None:
        """Record that the token was used now (callers rate-limit this)."""
        await self._call(self.redis.hset(TOKENS_USED_KEY, digest, now_iso()))

    async def list(self) -> list[TokenRecord]:
        """Every token's record (never the tokens), sorted by name."""
        raw = await self._call(self.redis.hgetall(TOKENS_KEY))
        used = await self._call(self.redis.hgetall(TOKENS_USED_KEY))
        return sorted(
            (_with_use(_record_decoder.decode(v), used.get(k)) for k, v in raw.items()),
            key=lambda r: r.name,
        )

    async def get(self, name: str) -> TokenRecord:
        """One token's record by name."""
        digest = await self._call(self.redis.hget(TOKEN_NAMES_KEY, name))
        raw = None if digest is None else await self._call(self.redis.hget(TOKENS_KEY, digest))
        if raw is None:
            raise TokenNotFound(name)
        used = await self._call(self.redis.hget(TOKENS_USED_KEY, digest))
        return _with_use(_record_decoder.decode(raw), used)

    async def revoke(self, name: str) -> str:
        """Revoke a token by name; returns its digest (for callers' caches)."""
        digest = await self._call(self.redis.hget(TOKEN_NAMES_KEY, name))
        if digest is None:
            raise TokenNotFound(name)
        await self._call(self.redis.hdel(TOKENS_KEY, digest))
        await self._call(self.redis.hdel(TOKEN_NAMES_KEY, name))
        await self._call(self.redis.hdel(TOKENS_USED_KEY, digest))
        return as_text(digest)


def _with_use(record: TokenRecord, used: Any) -> TokenRecord:
    if used is None:
        return record
    return msgspec.structs.replace(record, last_used_at=as_text(used))
