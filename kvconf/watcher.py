"""Watcher: a local, always-readable cache of one tenant, kept gap-free over pub/sub.

>>> async with Watcher("acme", "redis://localhost:6379/0") as watcher:
...     watcher.get("ai-12", "stale_timeout", 30)         # from memory, layered
...     watcher.on_change(print, namespace="ai-12")       # sync or async callback
...     limits = watcher.bind("ai-12", Limits)            # live, typed, validated
...     limits.value.stale_timeout

How it stays in step (invariant 5 of the design): subscribe first, read the
state and its revision ``R`` atomically, then apply only events after ``R``
strictly in order; a jump is filled from the tenant log, a log that no longer
holds the gap means a full resync; every (re)subscribe means "catch up now"; a
timer checks the tenant's revision and epoch with a short timeout, which is
also the watcher's own liveness signal (``stale``); a new epoch or a revision
that went backwards means a full re-list; keyspace notifications (where the
server emits them) reveal edits made outside kvconf. Reads never wait for
Redis: they serve the last known values the whole time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from . import _backends
from ._http.watch import HttpWatchEngine
from ._redis.names import DEFAULTS_NAMESPACE, validate_key, validate_namespace
from ._watch.callbacks import Binding, Callback, ChangeCallback, Resync
from ._watch.engine import WatchEngine
from ._watch.reader import CachedReader
from ._watch.state import Change, ValueChange
from .config import Settings
from .exceptions import InvalidInput
from .models import Entry, KeySpec
from .sync import SharedLoopThread, SyncFacade, blocking

__all__ = ["Binding", "Change", "Resync", "SyncWatcher", "ValueChange", "Watcher"]

S = TypeVar("S")
_MISSING: Any = object()


class Watcher(CachedReader):
    """Async watcher of one tenant: local cache, callbacks, typed bindings.

    ``get(namespace, key, default=None)`` is the effective value of ``key``
    (namespace > ``_defaults`` > environment > schema default), ``default``
    when no layer has it, served from memory: two dict lookups, in C when
    the optional ``kvconf._watch._speedups`` module is built.

    ``url`` is a Redis URL, or the ``http://``/``https://`` URL of a
    ``kvconf serve`` (with ``token``, a bearer token that may read the
    tenant, or some of its namespaces). Without ``url`` nor ``settings`` the
    environment decides, as for :class:`~kvconf.Store`: ``KVCONF_SERVER``
    (and ``KVCONF_TOKEN``), then ``KVCONF_REDIS_URL``, then the embedded
    default (with a warning); with ``settings``, ``settings.redis_url``.
    ``namespaces`` limits what is cached (``_defaults`` is always
    followed, for layering). ``check_interval`` is the period of the
    revision check that is also the liveness check (through a server: of
    the stream's heartbeats; two missed ones make the watcher ``stale``),
    ``timeout`` how long Redis (or the server) may take to answer it before
    the watcher is ``stale``.
    ``cache_file`` keeps the last known state on disk for a start without
    Redis. ``configure_keyspace_events`` lets the watcher turn on keyspace
    notifications (``CONFIG SET``) so edits made outside kvconf are noticed
    at once; refused, the watcher carries on without them.
    """

    # Slotted: an instance without a ``__dict__`` keeps the cached ``get`` at
    # its fastest. The synchronisation is the engine's (a collaborator, which
    # is also what the shared hub talks to).
    __slots__ = ("__weakref__", "_engine", "_state")

    def __init__(
        self,
        tenant: str,
        url: str | None = None,
        *,
        namespaces: Iterable[str] | None = None,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        check_interval: float = 1.0,
        timeout: float = 2.0,
        cache_file: str | Path | None = None,
        configure_keyspace_events: bool = False,
        fleet_interval: float = 5.0,
        instance_id: str | None = None,
        token: str | None = None,
    ) -> None:
        if url is None and settings is None:
            url, found = _backends.default_url(os.environ)
            token = token if token is not None else found
        settings = settings if settings is not None else Settings(redis_url=url)
        url = url if url is not None else settings.redis_url
        follow: frozenset[str] | None = None
        if namespaces is not None:
            follow = frozenset(validate_namespace(n) for n in namespaces) | {DEFAULTS_NAMESPACE}
        self._engine: WatchEngine | HttpWatchEngine
        if url is not None and _backends.implementation(url) is not None:
            self._engine = HttpWatchEngine(
                tenant, url, token=token, follow=follow, settings=settings,
                environ=os.environ if environ is None else environ,
                check_interval=check_interval, timeout=timeout,
                cache_file=Path(cache_file) if cache_file is not None else None,
                instance_id=instance_id,
            )  # fmt: skip
            self._state = self._engine.state
            self._state.attach(self)
            return
        if token is not None:
            raise InvalidInput("token is for a kvconf server URL (http:// or https://)",
                               field="token")  # fmt: skip
        self._engine = WatchEngine(
            tenant,
            url,
            follow=follow,
            settings=msgspec.structs.replace(settings, redis_url=url),
            environ=os.environ if environ is None else environ,
            check_interval=check_interval,
            timeout=timeout,
            cache_file=Path(cache_file) if cache_file is not None else None,
            configure_keyspace_events=configure_keyspace_events,
            fleet_interval=fleet_interval,
            instance_id=instance_id,
        )
        self._state = self._engine.state
        self._state.attach(self)

    @property
    def tenant(self) -> str:
        """The watched tenant."""
        return self._engine.tenant

    @property
    def url(self) -> str | None:
        """The Redis or server URL (None: the embedded default)."""
        return self._engine.url

    @property
    def namespaces(self) -> frozenset[str] | None:
        """The cached namespaces (``_defaults`` included), or None for all of them."""
        return self._engine.namespaces

    @property
    def instance_id(self) -> str:
        """This watcher's name in the tenant's fleet report."""
        return self._engine.instance_id

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Subscribe, load the state (or the cache file) and start following.

        Raises :class:`Unavailable` when Redis cannot be reached within
        ``timeout`` and there is no usable cache file. A failed start closes
        the watcher.
        """
        try:
            await self._engine.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop following, report leaving the fleet, write the cache file."""
        await self._engine.aclose()

    # -- reads (never touch Redis) -----------------------------------------------

    # ``get(namespace, key, default=None)`` comes from CachedReader (C when
    # built): two dict lookups in the cached views, else _get_slow.

    def _get_slow(self, namespace: str, key: str, default: Any = None) -> Any:
        """:meth:`get` when the fast path misses: build the view or resolve the layers."""
        self._check_followed(namespace)
        value = self._state.view(namespace).get(key, _MISSING)
        if value is not _MISSING:
            return value
        found, value = self._state.resolve_missing(namespace, validate_key(key))
        return value if found else default

    def entry(self, namespace: str, key: str) -> Entry | None:
        """The namespace's own entry of ``key`` (no layers), or None."""
        self._check_followed(namespace)
        return self._state.entries.get(namespace, {}).get(key)

    def namespace(self, namespace: str) -> dict[str, Any]:
        """A copy of the effective values of every key of ``namespace``."""
        self._check_followed(namespace)
        return dict(self._state.view(namespace))

    def entries(self) -> dict[str, dict[str, Entry]]:
        """A copy of every cached entry by namespace (own values, no layers)."""
        return {ns: dict(e) for ns, e in self._state.entries.items()}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every cached own value by namespace: ``{namespace: {key: value}}``."""
        return {ns: {k: e.value for k, e in es.items()} for ns, es in self._state.entries.items()}

    def specs(self, namespace: str) -> dict[str, KeySpec]:
        """The merged schema key specs that apply to ``namespace`` (cached)."""
        return self._state.specs(namespace)

    def _check_followed(self, namespace: str) -> None:
        if not self._state.follows(validate_namespace(namespace)):
            raise InvalidInput(f"namespace {namespace!r} is not watched", namespace=namespace)

    @property
    def revision(self) -> int:
        """The last revision applied to the cache."""
        return self._state.revision

    @property
    def epoch(self) -> str:
        """The tenant epoch the cache belongs to."""
        return self._state.epoch

    @property
    def stale(self) -> bool:
        """True while the watcher cannot confirm it is in step with Redis."""
        return bool(self._engine.stale_reasons)

    @property
    def stale_reasons(self) -> frozenset[str]:
        """Why the watcher is stale (``check``, ``pubsub``, ``sync``, ``startup``...)."""
        return frozenset(self._engine.stale_reasons)

    @property
    def last_synced_at(self) -> datetime | None:
        """When the cache was last confirmed to match Redis."""
        synced = self._engine.last_synced
        return None if synced is None else datetime.fromtimestamp(synced, UTC)

    # -- callbacks and bindings ---------------------------------------------------

    def on_change(
        self, callback: ChangeCallback, namespace: str | None = None, key: str | None = None
    ) -> Callable[[], None]:
        """Call ``callback(change)`` for each applied change (filtered); returns an unsubscriber.

        ``callback`` may be sync or async; async ones are awaited one at a
        time, in order. A callback that raises is logged and skipped.
        """
        if namespace is not None:
            self._check_followed(namespace)
        cb = Callback(callback, namespace, None if key is None else validate_key(key))
        self._engine.delivery.callbacks.append(cb)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._engine.delivery.callbacks.remove(cb)

        return cancel

    def on_resync(self, callback: Callable[[Resync], Any]) -> Callable[[], None]:
        """Call ``callback(resync)`` after every resynchronisation (sync only)."""
        self._engine.delivery.resync_callbacks.append(callback)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._engine.delivery.resync_callbacks.remove(callback)

        return cancel

    def bind(self, namespace: str, cls: type[S]) -> Binding[S]:
        """A live typed view of ``namespace`` as a msgspec Struct ``cls``.

        Raises :class:`InvalidInput` when the current values do not validate.
        """
        self._check_followed(namespace)
        try:
            binding = Binding(self._state, self._engine.delivery.bindings, namespace, cls)
        except msgspec.ValidationError as exc:
            raise InvalidInput(
                f"{self.tenant}/{namespace} does not validate as {cls.__name__}: {exc}",
                namespace=namespace,
            ) from exc
        self._engine.delivery.bindings.append(binding)
        return binding

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the cache has applied ``revision``; False on timeout."""
        if self._state.revision >= revision:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        waiters = self._engine.delivery.waiters
        waiters.append(entry)
        # Soon, in case the event of ``revision`` was the last one and got lost.
        handle = asyncio.get_running_loop().call_later(
            min(0.05, self._engine.interval), self._engine.nudge
        )
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return False
        finally:
            handle.cancel()
            with contextlib.suppress(ValueError):
                waiters.remove(entry)


class SyncWatcher(CachedReader, SyncFacade):
    """Blocking :class:`Watcher` for threaded services: the same implementation on a
    background event loop. Reads are served from memory in the caller's thread;
    callbacks run on the watchers' thread.

    Every SyncWatcher of a process runs on one loop thread (``kvconf-watch``),
    so those that watch the same server share one pub/sub connection; a slow
    callback of one delays the others' callbacks, never their reads.

    >>> with SyncWatcher("acme", "redis://localhost:6379/0") as watcher:
    ...     watcher.get("ai-12", "stale_timeout", 30)
    """

    _async: Watcher

    def __init__(self, tenant: str, url: str | None = None, **kwargs: Any) -> None:
        self._runner = SharedLoopThread("kvconf-watch")
        try:
            self._async = Watcher(tenant, url, **kwargs)
            self._async._state.attach(self)
            self._runner.run(self._async.start())
        except BaseException:
            self._runner.close()
            raise

    @property
    def watcher(self) -> Watcher:
        """The wrapped async watcher (use it only from its own loop)."""
        return self._async

    @property
    def tenant(self) -> str:
        """See :attr:`Watcher.tenant`."""
        return self._async.tenant

    @property
    def url(self) -> str | None:
        """See :attr:`Watcher.url`."""
        return self._async.url

    @property
    def namespaces(self) -> frozenset[str] | None:
        """See :attr:`Watcher.namespaces`."""
        return self._async.namespaces

    @property
    def instance_id(self) -> str:
        """See :attr:`Watcher.instance_id`."""
        return self._async.instance_id

    def _get_slow(self, namespace: str, key: str, default: Any = None) -> Any:
        return self._async._get_slow(namespace, key, default)  # see Watcher.get

    def entry(self, namespace: str, key: str) -> Entry | None:
        """See :meth:`Watcher.entry`."""
        return self._async.entry(namespace, key)

    def namespace(self, namespace: str) -> dict[str, Any]:
        """See :meth:`Watcher.namespace`."""
        return self._async.namespace(namespace)

    def entries(self) -> dict[str, dict[str, Entry]]:
        """See :meth:`Watcher.entries`."""
        return self._async.entries()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """See :meth:`Watcher.snapshot`."""
        return self._async.snapshot()

    def specs(self, namespace: str) -> dict[str, KeySpec]:
        """See :meth:`Watcher.specs`."""
        return self._async.specs(namespace)

    def bind(self, namespace: str, cls: type[S]) -> Binding[S]:
        """See :meth:`Watcher.bind`."""
        if self._runner.on_thread():  # from a callback: already on the loop
            return self._async.bind(namespace, cls)
        return self._runner.run(_call_soon(self._async.bind, namespace, cls))

    def on_change(
        self,
        callback: Callable[[Change], Any],
        namespace: str | None = None,
        key: str | None = None,
    ) -> Callable[[], None]:
        """See :meth:`Watcher.on_change`; callbacks run on the watchers' thread.

        A callback may register more callbacks and bindings; a blocking call
        from it (``wait_for_revision``, ``close``, a new SyncWatcher) would
        wait for its own thread and raises RuntimeError instead.
        """
        if self._runner.on_thread():  # from a callback: already on the loop
            return self._async.on_change(callback, namespace, key)
        return self._runner.run(_call_soon(self._async.on_change, callback, namespace, key))

    def on_resync(self, callback: Callable[[Resync], Any]) -> Callable[[], None]:
        """See :meth:`Watcher.on_resync`; callbacks run on the watchers' thread."""
        if self._runner.on_thread():  # from a callback: already on the loop
            return self._async.on_resync(callback)
        return self._runner.run(_call_soon(self._async.on_resync, callback))

    @property
    def revision(self) -> int:
        """See :attr:`Watcher.revision`."""
        return self._async.revision

    @property
    def epoch(self) -> str:
        """See :attr:`Watcher.epoch`."""
        return self._async.epoch

    @property
    def stale(self) -> bool:
        """See :attr:`Watcher.stale`."""
        return self._async.stale

    @property
    def stale_reasons(self) -> frozenset[str]:
        """See :attr:`Watcher.stale_reasons`."""
        return self._async.stale_reasons

    @property
    def last_synced_at(self) -> datetime | None:
        """See :attr:`Watcher.last_synced_at`."""
        return self._async.last_synced_at

    wait_for_revision = blocking(Watcher.wait_for_revision)


async def _call_soon(fn: Callable[..., S], *args: Any) -> S:
    return fn(*args)
