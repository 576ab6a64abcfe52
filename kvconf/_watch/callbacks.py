"""Callbacks, resync notices and typed bindings of the watcher (no I/O)."""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from .state import CacheState, Change

__all__ = ["Binding", "Callback", "ChangeCallback", "Resync", "awaited"]

log = logging.getLogger("kvconf.watcher")

S = TypeVar("S")
ChangeCallback = Callable[[Change], Awaitable[None] | None]


class Resync(msgspec.Struct, frozen=True):
    """A full or partial resynchronisation happened (see :meth:`Watcher.on_resync`).

    ``namespaces`` lists the namespaces whose values differed.
    """

    revision: int
    epoch: str
    reason: str
    namespaces: list[str] = []


class Binding(Generic[S]):
    """A live, validated, typed view of one namespace (see :meth:`Watcher.bind`).

    ``value`` is a new instance of the Struct after every change that touches
    the namespace, swapped in one assignment: a reader never sees half a
    change set. A change that does not validate keeps the last good value and
    sets ``error``.
    """

    def __init__(
        self, state: CacheState, registry: list[Binding[Any]], namespace: str, cls: type[S]
    ) -> None:
        self.namespace = namespace
        self.cls = cls
        self.error: str | None = None
        self._state = state
        self._registry = registry
        self._value: S = self._build()

    if TYPE_CHECKING:

        @property
        def value(self) -> S:
            """The current typed value."""

    else:
        # read-only and with no Python frame: a bound read stays near dict.get
        value = property(operator.attrgetter("_value"), doc="The current typed value.")

    def _build(self) -> S:
        view = self._state.view(self.namespace)
        return msgspec.convert(view, self.cls, strict=False)

    def refresh(self) -> None:
        try:
            value = self._build()
        except msgspec.ValidationError as exc:
            self.error = str(exc)
            log.error("binding of %s to %s kept its last value: %s", self.namespace, self.cls, exc)
            return
        self.error = None
        self._value = value

    def close(self) -> None:
        """Stop updating this binding."""
        with contextlib.suppress(ValueError):
            self._registry.remove(self)


class Callback:
    """A registered change callback with its namespace and key filter."""

    __slots__ = ("fn", "key", "namespace")

    def __init__(self, fn: ChangeCallback, namespace: str | None, key: str | None) -> None:
        self.fn, self.namespace, self.key = fn, namespace, key

    def wants(self, change: Change) -> bool:
        if self.namespace is not None and change.namespace != self.namespace:
            return False
        k = self.key
        return k is None or k in change.added or k in change.changed or k in change.removed


async def awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
