"""Store implementations by URL scheme, so ``Store(url)`` can pick one without
``store.py`` importing them (they subclass Store: importing them from it would
be a cycle). ``kvconf/__init__.py`` imports each implementation, which
registers itself here."""

from __future__ import annotations

from typing import Any

__all__ = ["implementation", "register"]

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
