"""The watcher's local cache, pure: applying events and states, diffs, layered views.

No I/O here. :class:`CacheState` holds one tenant's entries by namespace and
swaps each namespace's dict as a whole (copy on write), so a reader in another
thread sees a change set entirely or not at all.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from .._redis.names import DEFAULTS_NAMESPACE
from ..layers import effective_keys, resolve
from ..models import ChangeEvent, Entry, KeyChange, KeySpec, Schema
from ..schema import effective_specs
from .reader import CachedReader

__all__ = ["CacheState", "Change", "ValueChange"]


class ValueChange(msgspec.Struct, frozen=True, gc=False):
    """One key's old and new value and version (``None``/0 when absent)."""

    old: Any
    new: Any
    old_version: int
    version: int


class Change(msgspec.Struct, frozen=True):
    """What one applied revision changed in one namespace.

    ``added``, ``changed`` and ``removed`` map keys to their old and new
    values. ``resync`` marks the net difference found by a resynchronisation
    (a gap the log no longer held, a new epoch, an edit made outside kvconf):
    then ``revision`` is the revision the cache was resynchronised at.
    """

    revision: int
    namespace: str
    added: dict[str, ValueChange] = {}
    changed: dict[str, ValueChange] = {}
    removed: dict[str, ValueChange] = {}
    resync: bool = False
    actor: str = ""
    reason: str = ""

    @property
    def keys(self) -> set[str]:
        """Every key this change touched."""
        return set(self.added) | set(self.changed) | set(self.removed)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``changes`` as a list of per-key records)."""
        changes: list[dict[str, Any]] = []
        for op, part in (
            ("added", self.added),
            ("changed", self.changed),
            ("removed", self.removed),
        ):
            for key, vc in part.items():
                changes.append({"key": key, "op": op, **msgspec.to_builtins(vc)})
        return {
            "revision": self.revision,
            "namespace": self.namespace,
            "resync": self.resync,
            "actor": self.actor,
            "reason": self.reason,
            "changes": changes,
        }


def _diff(
    revision: int, namespace: str, old: Mapping[str, Entry], new: Mapping[str, Entry]
) -> Change | None:
    added: dict[str, ValueChange] = {}
    changed: dict[str, ValueChange] = {}
    removed: dict[str, ValueChange] = {}
    for key, entry in new.items():
        prev = old.get(key)
        if prev is None:
            added[key] = ValueChange(None, entry.value, 0, entry.version)
        elif prev != entry:
            changed[key] = ValueChange(prev.value, entry.value, prev.version, entry.version)
    for key, prev in old.items():
        if key not in new:
            removed[key] = ValueChange(prev.value, None, prev.version, 0)
    if not (added or changed or removed):
        return None
    return Change(revision, namespace, added, changed, removed, resync=True, reason="resync")


def _effective_diff(
    revision: int,
    namespace: str,
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    own: Mapping[str, Entry],
    actor: str,
) -> Change | None:
    """A schema change's effect on the effective values of ``namespace`` (None: none)."""
    added: dict[str, ValueChange] = {}
    changed: dict[str, ValueChange] = {}
    removed: dict[str, ValueChange] = {}
    for key, value in new.items():
        version = own[key].version if key in own else 0
        if key not in old:
            added[key] = ValueChange(None, value, 0, version)
        elif old[key] != value or type(old[key]) is not type(value):
            changed[key] = ValueChange(old[key], value, version, version)
    for key, value in old.items():
        if key not in new:
            version = own[key].version if key in own else 0
            removed[key] = ValueChange(value, None, version, 0)
    if not (added or changed or removed):
        return None
    return Change(revision, namespace, added, changed, removed, actor=actor, reason="schema")


class CacheState:
    """One tenant's cached entries, schemas and precomputed layered views.

    Writers (the watcher's event loop) call :meth:`apply_event` and
    :meth:`replace`; readers in any thread call :meth:`get` and friends.
    """

    def __init__(
        self,
        follow: frozenset[str] | None,
        environ: Mapping[str, str],
        prefix: str,
    ) -> None:
        self.follow = follow
        self.environ = environ
        self.prefix = prefix
        self.epoch = ""
        self.revision = 0
        self.schema_gen = -1
        self.entries: dict[str, dict[str, Entry]] = {}
        self.schemas: dict[str, Schema] = {}
        self._views: dict[str, dict[str, Any]] = {}
        self._readers: list[weakref.ref[CachedReader]] = []  # weak: no cycle via the state
        self._lock = threading.Lock()

    @property
    def views(self) -> dict[str, dict[str, Any]]:
        """Effective values per namespace, built on first read; swapped whole."""
        return self._views

    @views.setter
    def views(self, views: dict[str, dict[str, Any]]) -> None:
        self._views = views
        for ref in self._readers:
            reader = ref()
            if reader is not None:
                reader._views = views

    def attach(self, reader: CachedReader) -> None:
        """Keep ``reader._views`` the same object as :attr:`views` from now on."""
        self._readers = [r for r in self._readers if r() is not None]
        self._readers.append(weakref.ref(reader))
        reader._views = self._views

    def follows(self, namespace: str) -> bool:
        """True if this cache keeps ``namespace`` (``_defaults`` always)."""
        return self.follow is None or namespace in self.follow

    # -- writes ----------------------------------------------------------------

    def apply_event(self, event: ChangeEvent) -> list[Change]:
        """Apply one change set (its revision must be the next one).

        A change set across namespaces (event namespace ``"*"``) gives one
        :class:`Change` per namespace; all of them are swapped in at once.
        """
        self.revision = event.revision
        groups: dict[str, list[KeyChange]] = {}
        for kc in event.changes:
            ns = kc.namespace or event.namespace
            if self.follows(ns):
                groups.setdefault(ns, []).append(kc)
        if not groups:
            return []
        changes: list[Change] = []
        updated: dict[str, dict[str, Entry]] = {}
        for namespace, kcs in groups.items():
            old = self.entries.get(namespace, {})
            new = dict(old)
            added: dict[str, ValueChange] = {}
            changed: dict[str, ValueChange] = {}
            removed: dict[str, ValueChange] = {}
            for kc in kcs:
                prev = old.get(kc.key)
                if kc.deleted:
                    new.pop(kc.key, None)
                    if prev is not None:
                        removed[kc.key] = ValueChange(prev.value, None, prev.version, kc.version)
                    continue
                new[kc.key] = Entry(kc.value, kc.version, event.revision, event.ts, event.actor)
                if prev is None:
                    added[kc.key] = ValueChange(None, kc.value, 0, kc.version)
                else:
                    changed[kc.key] = ValueChange(prev.value, kc.value, prev.version, kc.version)
            updated[namespace] = new
            changes.append(
                Change(
                    event.revision,
                    namespace,
                    added,
                    changed,
                    removed,
                    actor=event.actor,
                    reason=event.reason,
                )
            )
        with self._lock:
            entries = dict(self.entries)
            for namespace, new in updated.items():
                if new:
                    entries[namespace] = new
                else:
                    entries.pop(namespace, None)
            self.entries = entries
            self._invalidate(list(updated))
        return changes

    def replace(
        self,
        epoch: str,
        revision: int,
        spaces: Mapping[str, dict[str, Entry]],
        only: Iterable[str] | None = None,
    ) -> list[Change]:
        """Replace the cache (or only the namespaces ``only``) with a state read.

        Returns the net difference, one resync :class:`Change` per namespace.
        """
        names = set(spaces) if only is None else set(only)
        if only is None:
            names.update(self.entries)
        changes: list[Change] = []
        entries = dict(self.entries) if only is not None else {}
        for ns in sorted(names):
            if not self.follows(ns):
                continue
            new = spaces.get(ns, {})
            found = _diff(revision, ns, self.entries.get(ns, {}), new)
            if found is not None:
                changes.append(found)
            if new:
                entries[ns] = dict(new)
            else:
                entries.pop(ns, None)
        with self._lock:
            self.epoch, self.revision = epoch, revision
            self.entries = entries
            self._invalidate([c.namespace for c in changes])
        return changes

    def schema_scope(self, namespace: str) -> list[str]:
        """The followed namespaces whose effective values a schema of ``namespace`` shapes."""
        if namespace != DEFAULTS_NAMESPACE:
            return [namespace] if self.follows(namespace) else []
        return sorted(ns for ns in {*self.entries, *self.schemas, namespace} if self.follows(ns))

    def effective_views(self, namespaces: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The effective values of ``namespaces``, as :meth:`view` gives them."""
        return {ns: self.view(ns) for ns in namespaces}

    def schema_changes(
        self, revision: int, before: Mapping[str, Mapping[str, Any]], actor: str
    ) -> list[Change]:
        """What new schemas changed in the effective values ``before`` held.

        One ``Change(reason="schema")`` per namespace whose effective values
        differ (a schema default appeared, changed or went away); versions
        are the keys' own (0 for a key only a default gives).
        """
        changes = []
        for ns, old in before.items():
            found = _effective_diff(
                revision, ns, old, self.view(ns), self.entries.get(ns, {}), actor
            )
            if found is not None:
                changes.append(found)
        return changes

    def set_schemas(self, gen: int, schemas: dict[str, Schema]) -> None:
        """Swap in the tenant's schemas (every view is rebuilt on next read)."""
        with self._lock:
            self.schema_gen = gen
            self.schemas = schemas
            self.views = {}

    def _invalidate(self, namespaces: list[str]) -> None:
        if not namespaces:
            return
        if DEFAULTS_NAMESPACE in namespaces:
            self.views = {}
            return
        views = dict(self.views)
        for ns in namespaces:
            views.pop(ns, None)
        self.views = views

    # -- reads -----------------------------------------------------------------

    def specs(self, namespace: str) -> dict[str, KeySpec]:
        """Merged key specs of ``namespace``."""
        return effective_specs(self.schemas, namespace)

    def view(self, namespace: str) -> dict[str, Any]:
        """Effective values of ``namespace`` (built once per change; do not mutate)."""
        found = self.views.get(namespace)
        if found is not None:
            return found
        with self._lock:
            own, defaults = self._layers(namespace)
            specs = self.specs(namespace)
            built = {
                key: resolve(key, own, defaults, self.environ, self.prefix, specs).value
                for key in effective_keys(own, defaults, specs)
            }
            views = dict(self.views)
            views[namespace] = built
            self.views = views
        return built

    def resolve_missing(self, namespace: str, key: str) -> tuple[bool, Any]:
        """Resolve a key no cached layer lists (the environment may still have it)."""
        own, defaults = self._layers(namespace)
        found = resolve(key, own, defaults, self.environ, self.prefix, self.specs(namespace))
        return found.layer is not None, found.value

    def _layers(self, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
        entries = self.entries
        own = {k: e.value for k, e in entries.get(namespace, {}).items()}
        defaults: dict[str, Any] = {}
        if namespace != DEFAULTS_NAMESPACE:
            defaults = {k: e.value for k, e in entries.get(DEFAULTS_NAMESPACE, {}).items()}
        return own, defaults
