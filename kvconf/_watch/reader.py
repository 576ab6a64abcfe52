"""The base of ``Watcher.get``: a cached read in C when built, else in Python.

``CachedReader.get`` answers from ``self._views`` (``{namespace: {key:
effective value}}``, swapped whole by the cache on every change) with two
dict lookups; anything else (a view not built yet, a key no layer has,
keyword arguments) goes to ``self._get_slow``, which subclasses define with
the full semantics. ``kvconf/_speedups.c`` is the C twin of
:class:`PyCachedReader`; ``setup.py`` builds it when a C compiler is there.
"""

from __future__ import annotations

from typing import Any


class PyCachedReader:
    """Base class whose ``get`` reads the watcher's cached views (pure Python)."""

    __slots__ = ("_views",)
    _views: dict[str, dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> PyCachedReader:
        self = super().__new__(cls)
        self._views = {}
        return self

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """The effective value of ``key`` in ``namespace`` from the local cache."""
        try:
            return self._views[namespace][key]
        except (KeyError, TypeError):
            return self._get_slow(namespace, key, default)

    def _get_slow(self, namespace: str, key: str, default: Any = None) -> Any:
        raise NotImplementedError


try:
    from ._speedups import CachedReader as CachedReader
except ImportError:  # no C compiler at install time: same behaviour, slower
    CachedReader = PyCachedReader  # type: ignore[assignment,misc]

#: True when ``Watcher.get`` runs in C.
SPEEDUPS: bool = CachedReader.__module__ == "kvconf._watch._speedups"
