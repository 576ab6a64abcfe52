"""The blocking facades offer what their async cores offer: same names, same kinds.

Checked by introspection, so a method added to ``Store`` or ``Watcher`` and
forgotten in ``SyncStore`` or ``SyncWatcher`` fails here.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from kvconf import Store, SyncStore, SyncWatcher, Watcher

#: Async lifecycle names and their blocking twins.
LIFECYCLE = {"aclose": "close", "__aenter__": "__enter__", "__aexit__": "__exit__"}
#: Only on the async side: a SyncWatcher starts in its constructor.
ASYNC_ONLY = {Watcher: {"start"}, Store: set()}
#: Only on the sync side: the wrapped async object.
SYNC_ONLY = {SyncStore: {"store"}, SyncWatcher: {"watcher"}}

PAIRS = [(Store, SyncStore), (Watcher, SyncWatcher)]


def public(cls: type) -> dict[str, Any]:
    """Public attributes of ``cls`` (and its lifecycle dunders) as found on the class."""
    names = {n for n in dir(cls) if not n.startswith("_")}
    names |= {n for n in (*LIFECYCLE, *LIFECYCLE.values()) if hasattr(cls, n)}
    return {n: inspect.getattr_static(cls, n) for n in names}


def kind(attr: Any) -> str:
    if isinstance(attr, property) or inspect.isdatadescriptor(attr):
        return "property"
    if inspect.iscoroutinefunction(attr):
        return "coroutine"
    if callable(attr) or isinstance(attr, staticmethod | classmethod):
        return "method"
    return "value"


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_public_names(async_cls: type, sync_cls: type) -> None:
    expected = {LIFECYCLE.get(n, n) for n in public(async_cls)} - ASYNC_ONLY[async_cls]
    found = set(public(sync_cls)) - SYNC_ONLY[sync_cls]
    assert sorted(expected - found) == [], f"missing on {sync_cls.__name__}"
    assert sorted(found - expected) == [], f"only on {sync_cls.__name__}"


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_coroutines_become_plain_methods(async_cls: type, sync_cls: type) -> None:
    sync_attrs = public(sync_cls)
    for name, attr in public(async_cls).items():
        if name in ASYNC_ONLY[async_cls]:
            continue
        twin = sync_attrs[LIFECYCLE.get(name, name)]
        want = kind(attr)
        if want == "coroutine":
            want = "method"
        assert kind(twin) == want, f"{sync_cls.__name__}.{name}: {kind(twin)}, not {want}"


def test_the_watchers_hub_hooks_are_not_public() -> None:
    hooks = {"on_event", "on_keyspace", "on_subscribed", "on_disconnected"}
    assert hooks.isdisjoint(dir(Watcher))
    assert hooks.isdisjoint(dir(SyncWatcher))
