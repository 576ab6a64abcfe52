"""Synchronous facades for non-async services: the async core on a background loop.

There is one implementation of the logic: each blocking method submits the
async method to an event loop running in a daemon thread and waits for it.

>>> with SyncStore() as store:
...     store.set("acme", "ai-12", "stale_timeout", 30).revision
1
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .store import Store

__all__ = ["LoopThread", "SharedLoopThread", "SyncFacade", "SyncStore", "blocking"]

P = ParamSpec("P")
R = TypeVar("R")


class LoopThread:
    """An asyncio event loop running in a daemon thread."""

    def __init__(self, name: str = "kvconf-sync") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` on the loop and wait for its result (re-raising its error).

        Called from the loop's own thread (a watcher callback making a
        blocking call) it would wait for itself forever: RuntimeError instead.
        """
        if self.on_thread():
            coro.close()
            raise RuntimeError(
                f"a blocking call from {self._thread.name!r}'s own thread (a callback?) would "
                "wait for itself; make it from another thread"
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def on_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.get_ident() == self._thread.ident

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has stopped the loop."""
        return self.loop.is_closed()

    def close(self) -> None:
        """Stop the loop and join the thread."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SharedLoopThread:
    """A handle on the process-wide loop thread called ``name``.

    The first handle starts the thread, the last one closed stops it: objects
    that share the thread share its event loop, and with it whatever is kept
    per loop (the watchers' pub/sub connection to a server).
    """

    _lock = threading.Lock()
    _threads: dict[str, tuple[LoopThread, int]] = {}

    def __init__(self, name: str) -> None:
        with self._lock:
            thread, refs = self._threads.get(name, (None, 0))
            if thread is None:
                thread = LoopThread(name)
            self._threads[name] = (thread, refs + 1)
        self.name = name
        self.loop = thread.loop
        self._pid = os.getpid()
        self._thread: LoopThread | None = thread

    def run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        """Run ``coro`` on the shared loop and wait for its result (see LoopThread.run)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            coro.close()
            raise RuntimeError(f"the handle on loop thread {self.name!r} is closed")
        return thread.run(coro, timeout)

    def on_thread(self) -> bool:
        """True when called from the shared loop's own thread."""
        return self._thread is not None and self._thread.on_thread()

    @property
    def closed(self) -> bool:
        """True once this handle is closed (or in a forked child, where the thread is not)."""
        return self._thread is None or self._pid != os.getpid()

    def close(self) -> None:
        """Drop this handle; stop the thread if it was the last."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None or self._pid != os.getpid():
                return
            _, refs = self._threads[self.name]
            if refs > 1:
                self._threads[self.name] = (thread, refs - 1)
                return
            del self._threads[self.name]
        thread.close()

    @classmethod
    def _forget_all(cls) -> None:
        """In a forked child: the parent's threads did not come along."""
        cls._lock = threading.Lock()
        cls._threads = {}


os.register_at_fork(after_in_child=SharedLoopThread._forget_all)


def blocking(
    method: Callable[Concatenate[Any, P], Awaitable[R]],
) -> Callable[Concatenate[Any, P], R]:
    """A blocking twin of an async method of the wrapped object ``self._async``.

    The method is looked up on the object, not called from the class: the
    object may be a subclass overriding it (``Store("https://...")`` is an
    ``HttpStore``).
    """
    name = method.__name__

    def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        coro = getattr(self._async, name)(*args, **kwargs)
        return self._runner.run(coro)  # type: ignore[no-any-return]

    functools.update_wrapper(wrapper, method)
    return wrapper


class SyncFacade:
    """Lifecycle shared by the blocking facades: an async object on a loop thread.

    Subclasses set ``self._runner`` (a :class:`LoopThread` or a
    :class:`SharedLoopThread`) and ``self._async`` (an object with
    ``aclose()``) in ``__init__``.
    """

    _runner: LoopThread | SharedLoopThread
    _async: Any

    def close(self) -> None:
        """Close the wrapped object and stop its loop thread (again: nothing)."""
        if self._runner.closed:
            return
        if self._runner.on_thread():  # a callback: closing would wait for itself
            raise RuntimeError("close() from a callback would wait for its own thread")
        try:
            self._runner.run(self._async.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class SyncStore(SyncFacade):
    """Blocking :class:`~kvconf.Store` with the same methods and arguments."""

    _async: Store

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        self._runner = LoopThread()
        self._async = Store(url, **kwargs)

    @property
    def store(self) -> Store:
        """The wrapped async store (use it only from its own loop)."""
        return self._async

    get = blocking(Store.get)
    get_namespace = blocking(Store.get_namespace)
    tenants = blocking(Store.tenants)
    namespaces = blocking(Store.namespaces)
    revision = blocking(Store.revision)
    info = blocking(Store.info)
    read_state = blocking(Store.read_state)
    changes_since = blocking(Store.changes_since)
    history = blocking(Store.history)
    version = blocking(Store.version)
    explain = blocking(Store.explain)
    explain_key = blocking(Store.explain_key)
    effective = blocking(Store.effective)
    set = blocking(Store.set)
    set_many = blocking(Store.set_many)
    delete = blocking(Store.delete)
    rollback = blocking(Store.rollback)
    commit = blocking(Store.commit)
    commit_across = blocking(Store.commit_across)
    schemas = blocking(Store.schemas)
    get_schema = blocking(Store.get_schema)
    specs = blocking(Store.specs)
    set_schema = blocking(Store.set_schema)
    create_tenant = blocking(Store.create_tenant)
    delete_tenant = blocking(Store.delete_tenant)
    undelete_tenant = blocking(Store.undelete_tenant)
    exists = blocking(Store.exists)
    ping = blocking(Store.ping)
    check = blocking(Store.check)
    check_schema = blocking(Store.check_schema)
    is_deleted = blocking(Store.is_deleted)
    repair_tenants = blocking(Store.repair_tenants)

    def plan(self, *args: Any, **kwargs: Any) -> Any:
        """See :meth:`Store.plan` (no I/O: runs in the caller's thread)."""
        return self._async.plan(*args, **kwargs)
