"""The watcher's cache (kvconf._watch.state), pure: no Redis, no event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from kvconf._codec import decode_event
from kvconf._watch.reader import PyCachedReader
from kvconf._watch.state import CacheState, Change, ValueChange
from kvconf.exceptions import Unavailable
from kvconf.models import ChangeEvent, Entry, KeyChange, KeySpec, Schema

TS = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(rev: int, ns: str, *changes: KeyChange, epoch: str = "e1", **kw: Any) -> ChangeEvent:
    return ChangeEvent("t", epoch, rev, ns, kw.pop("actor", "ops"), kw.pop("reason", ""), TS,
                     list(changes), **kw)  # fmt: skip


def put(key: str, value: Any, version: int = 1, ns: str = "") -> KeyChange:
    return KeyChange(key, version, version - 1, value=value, namespace=ns)


def drop(key: str, version: int, ns: str = "") -> KeyChange:
    return KeyChange(key, version, version - 1, deleted=True, namespace=ns)


def entry(value: Any, version: int = 1, revision: int = 1) -> Entry:
    return Entry(value, version, revision, TS, "ops")


def state(follow: set[str] | None = None, environ: dict[str, str] | None = None) -> CacheState:
    return CacheState(
        None if follow is None else frozenset(follow), environ or {}, "KVCONF_DEFAULT_"
    )


# -- applying events ------------------------------------------------------------------


def test_events_add_change_and_remove_keys() -> None:
    cache = state()
    (first,) = cache.apply_event(event(1, "ns", put("a", 1), put("b", "x"), actor="me"))
    assert (first.revision, first.namespace, first.actor) == (1, "ns", "me")
    assert first.added == {"a": ValueChange(None, 1, 0, 1), "b": ValueChange(None, "x", 0, 1)}
    assert not first.resync
    (second,) = cache.apply_event(event(2, "ns", put("a", 2, version=2), drop("b", 2)))
    assert second.changed == {"a": ValueChange(1, 2, 1, 2)}
    assert second.removed == {"b": ValueChange("x", None, 1, 2)}
    assert cache.revision == 2
    assert cache.entries == {"ns": {"a": Entry(2, 2, 2, TS, "ops")}}
    # The namespace's last key goes: the namespace goes.
    cache.apply_event(event(3, "ns", drop("a", 3)))
    assert cache.entries == {}
    assert cache.view("ns") == {}


def test_a_change_set_across_namespaces_is_one_change_per_namespace() -> None:
    cache = state()
    changes = cache.apply_event(event(1, "*", put("a", 1, ns="x"), put("b", 2, ns="y")))
    assert sorted((c.namespace, sorted(c.keys)) for c in changes) == [("x", ["a"]), ("y", ["b"])]
    assert {c.revision for c in changes} == {1}


def test_namespaces_not_followed_are_skipped_but_the_revision_moves() -> None:
    cache = state(follow={"mine", "_defaults"})
    assert cache.apply_event(event(1, "other", put("a", 1))) == []
    assert cache.revision == 1
    assert cache.entries == {}
    (change,) = cache.apply_event(event(2, "*", put("a", 1, ns="other"), put("b", 2, ns="mine")))
    assert change.namespace == "mine"
    assert cache.follows("_defaults")
    assert not cache.follows("other")


def test_deleting_an_absent_key_reports_nothing_for_it() -> None:
    cache = state()
    (change,) = cache.apply_event(event(1, "ns", drop("ghost", 1)))
    assert change.keys == set()


# -- layered views ----------------------------------------------------------------------


def test_views_layer_namespace_defaults_environment_and_schema() -> None:
    cache = state(environ={"KVCONF_DEFAULT_FROM_ENV": "7"})
    cache.set_schemas(1, {"ns": Schema(keys={"low": KeySpec(type="int", default=3)})})
    cache.apply_event(event(1, "_defaults", put("shared", "d"), put("own", "d")))
    cache.apply_event(event(2, "ns", put("own", "mine")))
    assert cache.view("ns") == {"own": "mine", "shared": "d", "low": 3}
    assert cache.resolve_missing("ns", "from_env") == (True, 7)
    assert cache.resolve_missing("ns", "nowhere") == (False, None)
    assert cache.specs("ns")["low"].default == 3


class Reader(PyCachedReader):
    __slots__ = ("__weakref__", "cache")

    def __init__(self, cache: CacheState) -> None:
        self.cache = cache
        cache.attach(self)

    def _get_slow(self, namespace: str, key: str, default: Any = None) -> Any:
        return self.cache.view(namespace).get(key, default)


def test_views_are_swapped_whole_and_an_attached_reader_follows() -> None:
    cache = state()
    reader = Reader(cache)
    cache.apply_event(event(1, "ns", put("a", 1)))
    assert "ns" not in reader._views  # built on first read
    assert reader.get("ns", "a") == 1
    before = cache.view("ns")
    assert reader._views is cache.views
    assert reader.get("ns", "a") == 1
    cache.apply_event(event(2, "ns", put("a", 2, version=2)))
    assert before == {"a": 1}  # a published view is never changed in place
    assert cache.view("ns") == {"a": 2}
    assert reader._views is cache.views


def test_a_defaults_change_rebuilds_every_view() -> None:
    cache = state()
    cache.apply_event(event(1, "ns", put("a", 1)))
    assert cache.view("ns") == {"a": 1}
    cache.apply_event(event(2, "_defaults", put("b", 2)))
    assert cache.view("ns") == {"a": 1, "b": 2}


# -- resynchronisation: gaps, new epochs, partial compares -------------------------------------


def test_a_gap_resolved_by_a_state_read_gives_the_net_difference() -> None:
    cache = state()
    cache.apply_event(event(1, "ns", put("a", 0), put("gone", 0)))
    cache.apply_event(event(2, "other", put("x", 1)))
    # Revisions 3..9 never arrived; the state read at 9 replaces the cache.
    read = {"ns": {"a": entry(6, 7, 8), "b": entry(1, 1, 9)}}
    changes = cache.replace("e1", 9, read)
    by_ns = {c.namespace: c for c in changes}
    assert set(by_ns) == {"ns", "other"}
    net = by_ns["ns"]
    assert (net.revision, net.resync, net.reason) == (9, True, "resync")
    assert net.added == {"b": ValueChange(None, 1, 0, 1)}
    assert net.changed == {"a": ValueChange(0, 6, 1, 7)}
    assert net.removed == {"gone": ValueChange(0, None, 1, 0)}
    assert by_ns["other"].removed == {"x": ValueChange(1, None, 1, 0)}
    assert (cache.epoch, cache.revision) == ("e1", 9)
    assert cache.view("ns") == {"a": 6, "b": 1}
    assert "other" not in cache.entries


def test_a_resync_with_nothing_different_reports_nothing() -> None:
    cache = state()
    cache.apply_event(event(1, "ns", put("a", 1)))
    same = {"ns": dict(cache.entries["ns"])}
    assert cache.replace("e2", 1, same) == []
    assert cache.epoch == "e2"  # a new epoch with the same values: adopted, no change


def test_a_partial_compare_leaves_other_namespaces_alone() -> None:
    cache = state()
    cache.apply_event(event(1, "*", put("a", 1, ns="x"), put("b", 1, ns="y")))
    # An edit outside kvconf in "x" only (a keyspace notification): compare just "x".
    (change,) = cache.replace("e1", 1, {"x": {"a": entry("edited", 2)}}, only=["x"])
    assert (change.namespace, change.changed["a"].new) == ("x", "edited")
    assert cache.entries["y"]["b"].value == 1
    # A namespace emptied outside kvconf disappears.
    (gone,) = cache.replace("e1", 1, {}, only=["y"])
    assert gone.removed == {"b": ValueChange(1, None, 1, 0)}
    assert set(cache.entries) == {"x"}


def test_a_resync_ignores_namespaces_not_followed() -> None:
    cache = state(follow={"x", "_defaults"})
    changes = cache.replace("e1", 3, {"x": {"a": entry(1)}, "y": {"b": entry(1)}})
    assert [c.namespace for c in changes] == ["x"]
    assert set(cache.entries) == {"x"}


# -- schemas -------------------------------------------------------------------------------------


def test_schema_changes_report_the_effective_difference() -> None:
    cache = state()
    cache.apply_event(event(1, "ns", put("own", 1)))
    scope = cache.schema_scope("ns")
    before = cache.effective_views(scope)
    schema = Schema(keys={"low": KeySpec(type="int", default=3), "own": KeySpec(default=9)})
    cache.set_schemas(2, {"ns": schema})
    (change,) = cache.schema_changes(2, before, "admin")
    assert (change.reason, change.actor, change.resync) == ("schema", "admin", False)
    assert change.added == {"low": ValueChange(None, 3, 0, 0)}
    assert change.changed == {}  # the own value shadows the new default
    before = cache.effective_views(scope)
    cache.set_schemas(3, {})
    (gone,) = cache.schema_changes(3, before, "admin")
    assert gone.removed == {"low": ValueChange(3, None, 0, 0)}


def test_a_defaults_schema_shapes_every_known_namespace() -> None:
    cache = state(follow={"a", "b", "_defaults"})
    cache.apply_event(event(1, "*", put("k", 1, ns="a"), put("k", 1, ns="b")))
    assert cache.schema_scope("_defaults") == ["_defaults", "a", "b"]
    assert cache.schema_scope("a") == ["a"]
    assert cache.schema_scope("elsewhere") == []


# -- wire events ---------------------------------------------------------------------------------


def test_events_decode_unknown_types_and_fields() -> None:
    # A newer kvconf's event type or field is read, not refused: the watcher re-lists.
    body = msgspec.json.encode({
        "tenant": "t", "epoch": "e", "revision": 4, "namespace": "", "actor": "a",
        "reason": "", "ts": "2026-01-01T00:00:00Z", "type": "future", "future_field": 1,
    })  # fmt: skip
    found = decode_event(body)
    assert (found.type, found.revision, found.changes) == ("future", 4, [])
    with pytest.raises(Unavailable):
        decode_event(b"{not json")


def test_change_to_json_lists_each_key() -> None:
    change = Change(5, "ns", added={"a": ValueChange(None, 1, 0, 1)},
                    removed={"b": ValueChange(2, None, 3, 0)}, actor="me")  # fmt: skip
    assert change.to_json()["changes"] == [
        {"key": "a", "op": "added", "old": None, "new": 1, "old_version": 0, "version": 1},
        {"key": "b", "op": "removed", "old": 2, "new": None, "old_version": 3, "version": 0},
    ]
