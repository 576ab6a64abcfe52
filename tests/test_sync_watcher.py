"""SyncWatcher: the blocking facade, on one loop thread shared by the process."""

from __future__ import annotations

import threading
import time

from kvconf import SyncStore
from kvconf.watcher import SyncWatcher

from .test_watcher import Limits, _settings


def test_sync_watcher(backend_url: str, tenant: str) -> None:
    from kvconf import SyncStore

    with SyncStore(settings=_settings(backend_url), environ={}) as store:
        store.set(tenant, "ns", "k", 1)
        with SyncWatcher(tenant, backend_url, environ={}) as watcher:
            seen: list[int] = []
            watcher.on_change(lambda c: seen.append(c.revision))
            limits = watcher.bind("ns", Limits)
            assert watcher.get("ns", "k") == 1
            result = store.set_many(tenant, "ns", {"k": 2, "low": 5})
            assert watcher.wait_for_revision(result.revision, timeout=5)
            assert (watcher.get("ns", "k"), watcher.revision, seen) == (2, 2, [2])
            assert limits.value.low == 5
            assert watcher.namespace("ns") == {"k": 2, "low": 5}
            assert not watcher.stale
            assert watcher.last_synced_at is not None


def _watch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kvconf-watch" and t.is_alive()]


def test_sync_watchers_share_one_thread_and_one_pubsub_connection(
    backend_url: str, tenant: str
) -> None:
    assert _watch_threads() == []
    with SyncStore(settings=_settings(backend_url), environ={}) as store:
        store.set(tenant, "a", "k", 1)
        store.set(tenant + "x", "a", "k", 1)
        first = SyncWatcher(tenant, backend_url, environ={})
        second = SyncWatcher(tenant + "x", backend_url, environ={})
        try:
            assert len(_watch_threads()) == 1
            assert first.watcher._engine.hub is second.watcher._engine.hub is not None
            assert first.watcher._engine.hub.refs == 2
            seen: list[tuple[str, int]] = []
            second.on_change(lambda c: seen.append(("second", c.revision)))
            first.close()  # the other goes on, on the same thread
            result = store.set(tenant + "x", "a", "k", 2)
            assert second.wait_for_revision(result.revision, timeout=5)
            assert (second.get("a", "k"), seen) == (2, [("second", result.revision)])
            assert len(_watch_threads()) == 1
        finally:
            first.close()
            second.close()
    assert _watch_threads() == []  # the last one closed stops the thread


def test_a_callback_may_register_but_a_blocking_call_is_refused(
    backend_url: str, tenant: str
) -> None:
    # Callbacks of every SyncWatcher run on the shared thread: a blocking call
    # from one would wait for that thread forever, so it raises instead.
    with SyncStore(settings=_settings(backend_url), environ={}) as store:
        store.set(tenant, "a", "k", 1)
        store.set(tenant + "x", "a", "k", 1)
        with (
            SyncWatcher(tenant, backend_url, environ={}) as first,
            SyncWatcher(tenant + "x", backend_url, environ={}) as second,
        ):
            outcome: list[tuple[str, object]] = []

            def on_first(change: object) -> None:
                second.on_change(lambda c: outcome.append(("registered", c.revision)))
                try:
                    second.wait_for_revision(99, timeout=0.1)
                except RuntimeError as exc:
                    outcome.append(("refused", "own thread" in str(exc)))
                try:
                    second.close()
                except RuntimeError as exc:
                    outcome.append(("close refused", "own thread" in str(exc)))

            first.on_change(on_first)
            result = store.set(tenant, "a", "k", 2)
            assert first.wait_for_revision(result.revision, timeout=5)
            assert outcome == [("refused", True), ("close refused", True)]
            other = store.set(tenant + "x", "a", "k", 2)
            assert second.wait_for_revision(other.revision, timeout=5)
            assert outcome == [
                ("refused", True),
                ("close refused", True),
                ("registered", other.revision),
            ]
            assert not second.stale


def test_sync_watcher_has_the_watchers_reads_and_resync_callbacks(
    backend_url: str, tenant: str
) -> None:
    from kvconf import KeySpec, Schema

    with SyncStore(settings=_settings(backend_url), environ={}) as store:
        store.set_schema(tenant, "ns", Schema(keys={"low": KeySpec(type="int", default=3)}))
        store.set(tenant, "ns", "k", 1)
        with SyncWatcher(tenant, backend_url, environ={}, namespaces=["ns"]) as watcher:
            assert (watcher.tenant, watcher.url) == (tenant, backend_url)
            assert watcher.namespaces == {"ns", "_defaults"}
            assert watcher.instance_id == watcher.watcher.instance_id
            assert watcher.entries()["ns"]["k"].value == 1
            assert watcher.specs("ns")["low"].default == 3
            assert watcher.stale_reasons == frozenset()
            resyncs: list[str] = []
            watcher.on_resync(lambda r: resyncs.append(r.reason))
            # The tenant's history is replaced: a new epoch means a full re-list.
            store.delete_tenant(tenant, hard=True)
            store.set(tenant, "ns", "k", 2)
            deadline = time.monotonic() + 10
            while not (resyncs and watcher.get("ns", "k") == 2):
                assert time.monotonic() < deadline, (resyncs, watcher.get("ns", "k"))
                time.sleep(0.02)
            assert watcher.epoch == store.info(tenant).epoch
