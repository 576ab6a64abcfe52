"""Store implementations by URL scheme, so ``Store(url)`` can pick one without
``store.py`` importing them (they subclass Store: importing them from it would
be a cycle). ``kvconf/__init__.py`` imports each implementation, which
registers itself here. Also where ``Store()`` without a URL finds one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .exceptions import InvalidInput

__all__ = ["EMBEDDED_WARNING", "default_url", "implementation", "register"]

log = logging.getLogger("kvconf")

#: Logged when ``Store()`` falls back on the embedded default.
EMBEDDED_WARNING = (
    "neither KVCONF_SERVER nor KVCONF_REDIS_URL is set: using the embedded default "
    "store (in-process, in memory; nothing is shared with other processes)"
)

_BY_SCHEME: dict[str, type[Any]] = {}


def register(cls: type[Any], *schemes: str) -> None:
    """Make ``Store(url)`` build a ``cls`` for URLs of these schemes."""
    for scheme in schemes:
        _BY_SCHEME[scheme] = cls


def implementation(url: str | None) -> type[Any] | None:
    """The registered class for ``url``'s scheme, or None (a Redis URL)."""
    if url is None:
        return None
    scheme, sep, _ = url.partition("://")
    return _BY_SCHEME.get(scheme.lower()) if sep else None


def default_url(environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The URL and token of ``Store()`` without a URL: ``KVCONF_SERVER`` (with
    ``KVCONF_TOKEN``), else ``KVCONF_REDIS_URL``, else None (the embedded default,
    with a warning naming it)."""
    server = environ.get("KVCONF_SERVER")
    if server:
        if implementation(server) is None:
            raise InvalidInput("KVCONF_SERVER must be an http:// or https:// URL", field="url")
        return server, environ.get("KVCONF_TOKEN") or None
    redis_url = environ.get("KVCONF_REDIS_URL")
    if redis_url:
        return redis_url, None
    log.warning(EMBEDDED_WARNING)
    return None, None
