"""What an applied change announces, whichever transport brought it.

A watcher's engine (over Redis, :mod:`kvconf._watch.engine`, or over a
``kvconf serve``, :mod:`kvconf._http.watch`) applies changes to its
:class:`~kvconf._watch.state.CacheState` and hands them to its
:class:`Delivery`: bindings are refreshed, ``wait_for_revision`` waiters
released, resync notices and change callbacks called (sync ones inline,
async ones awaited one at a time, in order, by the dispatch loop), and the
cache file marked dirty so the file loop writes it within a second.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from .._redis.names import DEFAULTS_NAMESPACE
from .cache_file import CacheFile, write_cache_file
from .callbacks import Binding, Callback, Resync, awaited
from .state import CacheState, Change

__all__ = ["Delivery"]

log = logging.getLogger("kvconf.watcher")


class Delivery:
    """The callbacks, bindings, waiters and cache file of one watcher."""

    def __init__(self, tenant: str, state: CacheState, cache_file: Path | None) -> None:
        self.tenant = tenant
        self.state = state
        self.cache_file = cache_file
        self.callbacks: list[Callback] = []
        self.resync_callbacks: list[Callable[[Resync], Any]] = []
        self.bindings: list[Binding[Any]] = []
        self.waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self.dirty = False
        self.closed = False
        #: False while the cache holds a cache file's state not yet confirmed (never written back).
        self.confirmed: Callable[[], bool] = lambda: True
        self._queue: asyncio.Queue[Coroutine[Any, Any, Any]] | None = None

    def loops(self) -> list[tuple[str, Coroutine[Any, Any, None]]]:
        """The coroutines to run as tasks (named): callbacks, and the cache file if any."""
        self._queue = asyncio.Queue()
        loops = [("kvconf-watch-callbacks", self._dispatch_loop())]
        if self.cache_file is not None:
            loops.append(("kvconf-watch-file", self._file_loop()))
        return loops

    def wake_loops(self) -> None:
        """Let the dispatch loop see :attr:`closed`."""
        if self._queue is not None:
            self._queue.put_nowait(_nothing())

    def applied(self, changes: list[Change], resync: str | None) -> None:
        """Announce ``changes`` (``resync``: why the cache was re-read, or None)."""
        state = self.state
        touched = {c.namespace for c in changes}
        if touched or resync:
            everything = resync is not None or DEFAULTS_NAMESPACE in touched
            for binding in list(self.bindings):
                if everything or binding.namespace in touched:
                    binding.refresh()
        self.advanced()
        self.dirty = True
        if resync is not None:
            notice = Resync(state.revision, state.epoch, resync, [c.namespace for c in changes])
            for rcb in list(self.resync_callbacks):
                try:
                    rcb(notice)
                except Exception:
                    log.exception("resync callback %r raised", rcb)
        for change in changes:
            for cb in list(self.callbacks):
                if cb.wants(change):
                    self._call(cb, change)

    def advanced(self) -> None:
        """Release the waiters of every revision applied so far."""
        if self.waiters:
            revision = self.state.revision
            for rev, fut in list(self.waiters):
                if rev <= revision and not fut.done():
                    fut.set_result(True)

    def schema_applied(self, changes: list[Change]) -> None:
        """Announce a schema change: every binding re-validates, even with no value change."""
        self.applied(changes, None)
        for binding in list(self.bindings):
            binding.refresh()

    def close(self) -> None:
        """Release every waiter (False) and drop the async callbacks not yet run."""
        self.closed = True
        for _, fut in self.waiters:
            if not fut.done():
                fut.set_result(False)
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().close()

    def _call(self, cb: Callback, change: Change) -> None:
        try:
            result = cb.fn(change)
        except Exception:
            log.exception("change callback %r raised; the watcher goes on", cb.fn)
            return
        if result is not None and inspect.isawaitable(result) and self._queue is not None:
            self._queue.put_nowait(awaited(result))

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        while not self.closed:
            coro = await self._queue.get()
            try:
                await coro
            except Exception:
                log.exception("async change callback raised; the watcher goes on")

    # -- the cache file ----------------------------------------------------------------

    async def _file_loop(self) -> None:
        """Write the cache file at most once a second while there are changes."""
        while not self.closed:
            await asyncio.sleep(1.0)
            await self.save()

    async def save(self) -> None:
        """Write the cache file now if the cache changed and is confirmed (logged, never raised)."""
        if self.cache_file is None or not self.dirty or not self.confirmed():
            return
        state = self.state
        data = CacheFile(
            tenant=self.tenant, epoch=state.epoch, revision=state.revision,
            namespaces=state.entries, schemas=state.schemas, schema_gen=state.schema_gen,
        )  # fmt: skip
        self.dirty = False
        try:
            await asyncio.to_thread(write_cache_file, self.cache_file, data)
        except OSError as exc:
            log.warning("cannot write cache file %s: %s", self.cache_file, exc)


async def _nothing() -> None:
    return None
