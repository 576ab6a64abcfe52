"""The blocking facade runs the async implementation, on both backends."""

from __future__ import annotations

import threading

import pytest

from kvconf import Settings, SyncStore, VersionConflict


def test_sync_store_wraps_the_async_store(backend_url: str, tenant: str) -> None:
    with SyncStore(settings=Settings(redis_url=backend_url), environ={}) as store:
        assert store.set(tenant, "ns", "k", 1).revision == 1
        assert store.get(tenant, "ns", "k").value == 1
        with pytest.raises(VersionConflict):
            store.set(tenant, "ns", "k", 2, expect_version=0)
        assert store.revision(tenant) == 1
        assert [v.version for v in store.history(tenant, "ns", "k")] == [1]


def test_sync_store_is_usable_from_many_threads(backend_url: str, tenant: str) -> None:
    with SyncStore(settings=Settings(redis_url=backend_url), environ={}) as store:
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for j in range(10):
                    store.set(tenant, "ns", f"k{i}", j)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.revision(tenant) == 40
        assert {k: e.value for k, e in store.get_namespace(tenant, "ns").items()} == {
            f"k{i}": 9 for i in range(4)
        }
