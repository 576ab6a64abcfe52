"""``CachedReader``: the C fast path of ``Watcher.get`` and its Python twin agree.

Both implementations run every case. The C module is optional (built when a
C compiler is there); ``KVCONF_TEST_REQUIRE_SPEEDUPS=1`` (set by CI) turns
its absence into a failure.
"""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

import pytest

from kvconf._watch.reader import PyCachedReader

try:
    from kvconf._watch._speedups import CachedReader as CReader
except ImportError:
    CReader = None  # type: ignore[assignment,misc]

IMPLEMENTATIONS: list[Any] = [PyCachedReader]
if CReader is not None:
    IMPLEMENTATIONS.append(CReader)


def test_c_module_is_built_where_required() -> None:
    if CReader is None:
        if os.environ.get("KVCONF_TEST_REQUIRE_SPEEDUPS") == "1":
            pytest.fail("kvconf._watch._speedups was not built")
        pytest.skip("kvconf._watch._speedups not built (no C compiler at install time)")
    import kvconf._watch.reader

    assert kvconf._watch.reader.CachedReader is CReader
    assert kvconf._watch.reader.SPEEDUPS


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda cls: cls.__module__)
def reader_class(request: pytest.FixtureRequest) -> type[Any]:
    class Reader(request.param):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.misses: list[tuple[Any, str, Any]] = []

        def _get_slow(self, namespace: Any, key: str, default: Any = None) -> Any:
            self.misses.append((namespace, key, default))
            return ("slow", default)

    return Reader


def test_a_hit_reads_the_current_views_without_the_slow_path(reader_class: type[Any]) -> None:
    reader = reader_class()
    reader._views = {"ns": {"a": 1, "none": None}}
    assert reader.get("ns", "a") == 1
    assert reader.get("ns", "a", "fallback") == 1
    assert reader.get("ns", "a", default="fallback") == 1
    assert reader.get("ns", "none", "fallback") is None  # a stored None is a value
    assert reader.misses == []
    reader._views = {"ns": {"a": 2}}  # swapped whole, as the cache does
    assert reader.get("ns", "a") == 2


def test_a_miss_goes_to_the_slow_path_with_the_same_arguments(reader_class: type[Any]) -> None:
    reader = reader_class()
    reader._views = {"ns": {"a": 1}}
    assert reader.get("ns", "b") == ("slow", None)
    assert reader.get("other", "a", 5) == ("slow", 5)
    assert reader.get("ns", "b", default=7) == ("slow", 7)
    assert reader.get(namespace="ns", key="z") == ("slow", None)
    assert reader.get(["unhashable"], "a") == ("slow", None)
    assert reader.misses == [
        ("ns", "b", None),
        ("other", "a", 5),
        ("ns", "b", 7),
        ("ns", "z", None),
        (["unhashable"], "a", None),
    ]


def test_a_bad_call_is_a_type_error(reader_class: type[Any]) -> None:
    reader = reader_class()
    with pytest.raises(TypeError):
        reader.get("ns")
    with pytest.raises(TypeError):
        reader.get("ns", "a", None, "extra")
    with pytest.raises(TypeError):
        reader.get("ns", "a", colour="red")


def test_views_must_be_a_dict_in_c() -> None:
    if CReader is None:
        pytest.skip("kvconf._watch._speedups not built")
    reader = CReader()
    with pytest.raises(TypeError):
        reader._views = [("ns", {})]  # type: ignore[assignment]
    assert reader._views == {}


def test_a_reader_in_a_cycle_is_collected(reader_class: type[Any]) -> None:
    reader = reader_class()
    reader._views = {"self": {"me": reader}}
    ref = weakref.ref(reader)
    del reader
    gc.collect()
    assert ref() is None


FALLBACK_SCRIPT = """
import asyncio, sys
sys.modules["kvconf._watch._speedups"] = None  # as if no C compiler was there at install time
import kvconf._watch.reader
from kvconf import Store, Watcher

async def main():
    assert not kvconf._watch.reader.SPEEDUPS
    url = "memory://fallback"
    store = Store(url)
    await store.create_tenant("t")
    await store.set_many("t", "ns", {"a": 1})
    await store.set("t", "_defaults", "d", "from-defaults")
    async with Watcher("t", url, environ={"KVCONF_DEFAULT_E": "7"}) as watcher:
        print(watcher.get("ns", "a"), watcher.get("ns", "d"), watcher.get("ns", "e"),
              watcher.get("ns", "none", "fallback"))
        await store.set("t", "ns", "a", 2)
        await watcher.wait_for_revision(await store.revision("t"), 5)
        print(watcher.get("ns", "a"))
    await store.aclose()

asyncio.run(main())
"""


def test_the_watcher_works_without_the_c_module() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["1 from-defaults 7 fallback", "2"]


def test_a_dropped_watcher_is_freed_without_the_cycle_collector() -> None:
    # The cache keeps its readers weakly: no watcher -> cache -> watcher cycle.
    from kvconf.watcher import Watcher

    gc.disable()
    try:
        watcher = Watcher("t", "memory://reader-cycle", environ={})
        ref = weakref.ref(watcher)
        del watcher
        assert ref() is None
    finally:
        gc.enable()
