"""Every Redis key and channel name kvconf uses, and name validation.

Tenant isolation is auditable here: every per-tenant name is built by
:class:`TenantKeys` and carries the ``{tenant}`` hash tag, so all of a tenant's
state sits in one Cluster slot and one script may touch all of it.
"""

from __future__ import annotations

import re
from typing import Final

from ..exceptions import InvalidName

PREFIX: Final = "kvconf"
DEFAULTS_NAMESPACE: Final = "_defaults"
#: Global set of live tenant names (one of the few keys outside any tenant's slot).
TENANTS_KEY: Final = f"{PREFIX}:tenants"
#: SCAN pattern of every tenant's metadata hash (finds tenants missing from TENANTS_KEY).
TENANT_META_PATTERN: Final = f"{PREFIX}:{{*}}:meta"
#: API tokens: SHA-256 digest -> token record (JSON).
TOKENS_KEY: Final = f"{PREFIX}:tokens"
#: API tokens: name -> digest.
TOKEN_NAMES_KEY: Final = f"{PREFIX}:tokens:names"
#: API tokens: SHA-256 digest -> when last used (ISO time, written at most once a
#: minute per token per API worker).
TOKENS_USED_KEY: Final = f"{PREFIX}:tokens:used"
#: Global audit list of changes a tenant's own log cannot keep (hard deletes),
#: newest first, capped at :data:`AUDIT_LIMIT`: JSON of tenant, op, actor,
#: reason, ts, revision.
AUDIT_KEY: Final = f"{PREFIX}:audit"
AUDIT_LIMIT: Final = 10_000

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
MAX_NAME_LENGTH: Final = 128
# Names already found valid: a set lookup is ~10x cheaper than the regex, and
# the same few names are checked on every read. Bounded by clearing.
_valid: set[str] = set()
_VALID_CACHE_SIZE: Final = 65_536


def validate_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid tenant, namespace or key name.

    Names are 1 to 128 characters of ``A-Z a-z 0-9 _ . -`` and do not start
    with ``.``. Raises :class:`InvalidName` saying which rule broke.
    """
    if not isinstance(name, str):
        raise InvalidName(kind, name, "must be a string")
    if name in _valid:
        return name
    if not name:
        raise InvalidName(kind, name, "must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(kind, name[:40] + "...", f"longer than {MAX_NAME_LENGTH} characters")
    if name.startswith("."):
        raise InvalidName(kind, name, "must not start with '.'")
    if not _NAME.fullmatch(name):
        raise InvalidName(kind, name, "only A-Z a-z 0-9 _ . - are allowed")
    if len(_valid) >= _VALID_CACHE_SIZE:
        _valid.clear()
    _valid.add(name)
    return name


def validate_tenant(name: object) -> str:
    """Validate a tenant name."""
    return validate_name("tenant", name)


def validate_namespace(name: object) -> str:
    """Validate a namespace name (``_defaults`` is allowed: it is the reserved one)."""
    return validate_name("namespace", name)


def validate_key(name: object) -> str:
    """Validate a key name."""
    return validate_name("key", name)


class TenantKeys:
    """The Redis names of one tenant's state (all in one hash slot)."""

    __slots__ = ("base", "epoch", "log", "meta", "namespaces", "rev", "schema", "tenant")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.base = f"{PREFIX}:{{{tenant}}}"
        self.rev = f"{self.base}:rev"
        self.epoch = f"{self.base}:epoch"
        self.log = f"{self.base}:log"
        self.meta = f"{self.base}:meta"
        self.namespaces = f"{self.base}:nss"
        self.schema = f"{self.base}:schema"

    def ns(self, namespace: str) -> str:
        """Hash of a namespace's current values."""
        return f"{self.base}:ns:{namespace}"

    def trash(self, namespace: str = "") -> str:
        """Hash of a soft-deleted tenant's namespace (``""``: the prefix of them all)."""
        return f"{self.base}:trash:ns:{namespace}"

    def hist(self, namespace: str) -> str:
        """Sorted set of every version of every key of a namespace.

        All scores are 0; members ``<key>|<version, 10 digits>|<record JSON>``
        sort by key, then version (``|`` never occurs in a key), so one key's
        versions are a lexicographic range (:func:`hist_range`).
        """
        return f"{self.base}:hist:{namespace}"

    @property
    def changes_channel(self) -> str:
        """(Sharded) pub/sub channel of the tenant's change events."""
        return f"{self.base}:changes"

    @property
    def fleet(self) -> str:
        """Hash of watcher instances reporting their applied revision."""
        return f"{self.base}:fleet"


HIST_VERSION_DIGITS: Final = 10


def hist_member_prefix(key: str, version: int | None = None) -> bytes:
    """``key|`` or ``key|<version>|``: the start of a key's history members."""
    if version is None:
        return f"{key}|".encode()
    return f"{key}|{version:0{HIST_VERSION_DIGITS}d}|".encode()


def tenant_from_key(key: str) -> str | None:
    """The tenant a kvconf key belongs to, or None for foreign keys."""
    head = f"{PREFIX}:{{"
    if not key.startswith(head):
        return None
    end = key.find("}", len(head))
    return key[len(head) : end] if end > 0 else None


def keyspace_channel(key: str, db: int = 0) -> str:
    """The keyspace-notification channel of ``key`` (or of a pattern) in database ``db``."""
    return f"__keyspace@{db}__:{key}"
