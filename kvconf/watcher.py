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
import inspect
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from redis.exceptions import RedisError

from . import _watch_hub as hubs
from ._keys import DEFAULTS_NAMESPACE, validate_key, validate_namespace
from ._watch_file import CacheFile, load_cache_file, write_cache_file
from ._watch_state import CacheState, Change, EventLike, ValueChange, WireEvent
from .config import Settings
from .exceptions import (
    HistoryTrimmed,
    InvalidInput,
    KvconfError,
    TenantNotFound,
    Unavailable,
)
from .fleet import FleetMember, encode_member
from .models import Entry, KeySpec
from .store import Store, tenant_keys
from .sync import LoopThread, blocking

__all__ = ["Binding", "Change", "Resync", "SyncWatcher", "ValueChange", "Watcher"]

log = logging.getLogger("kvconf.watcher")

S = TypeVar("S")
ChangeCallback = Callable[[Change], Awaitable[None] | None]
_FAILURES = (Unavailable, RedisError, OSError, TimeoutError)
_LOG_PAGE = 500
_KEYSPACE_DELAY = 0.05
_MISSING: Any = object()


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

    def __init__(self, watcher: Watcher, namespace: str, cls: type[S]) -> None:
        self.namespace = namespace
        self.cls = cls
        self.error: str | None = None
        self._watcher = watcher
        self._value: S = self._build()

    @property
    def value(self) -> S:
        """The current typed value."""
        return self._value

    def _build(self) -> S:
        view = self._watcher._state.view(self.namespace)
        return msgspec.convert(view, self.cls, strict=False)

    def _refresh(self) -> None:
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
            self._watcher._bindings.remove(self)


class _Callback:
    __slots__ = ("fn", "key", "namespace")

    def __init__(self, fn: ChangeCallback, namespace: str | None, key: str | None) -> None:
        self.fn, self.namespace, self.key = fn, namespace, key

    def wants(self, change: Change) -> bool:
        if self.namespace is not None and change.namespace != self.namespace:
            return False
        k = self.key
        return k is None or k in change.added or k in change.changed or k in change.removed


class Watcher:
    """Async watcher of one tenant: local cache, callbacks, typed bindings.

    ``url`` is the Redis URL (None: ``settings.redis_url``, else the embedded
    default). ``namespaces`` limits what is cached (``_defaults`` is always
    followed, for layering). ``check_interval`` is the period of the
    revision check that is also the liveness check, ``timeout`` how long
    Redis may take to answer it before the watcher is ``stale``.
    ``cache_file`` keeps the last known state on disk for a start without
    Redis. ``configure_keyspace_events`` lets the watcher turn on keyspace
    notifications (``CONFIG SET``) so edits made outside kvconf are noticed
    at once; refused, the watcher carries on without them.
    """

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
    ) -> None:
        self.tenant = tenant
        self._tk = tenant_keys(tenant)
        settings = settings if settings is not None else Settings()
        self.url = url if url is not None else settings.redis_url
        settings = msgspec.structs.replace(settings, redis_url=self.url)
        follow: frozenset[str] | None = None
        if namespaces is not None:
            follow = frozenset(validate_namespace(n) for n in namespaces) | {DEFAULTS_NAMESPACE}
        self.namespaces = follow
        prefix = settings.defaults_env_prefix
        self._state = CacheState(follow, os.environ if environ is None else environ, prefix)
        self._store = Store(settings=settings, client=hubs.client_for(self.url, timeout))
        self._interval = check_interval
        self._timeout = timeout
        self._cache_file = Path(cache_file) if cache_file is not None else None
        self._configure_keyspace = configure_keyspace_events
        self._fleet_interval = fleet_interval
        host = socket.gethostname()
        self.instance_id = instance_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._host, self._started_at = host, time.time()
        self._hub: hubs.Hub | None = None
        self._pending: deque[WireEvent] = deque()
        self._busy = True
        self._need_resync: str | None = None
        self._need_catchup = False
        self._verify: set[str] = set()
        self._ks_pending: dict[str, int] = {}
        self._ks_scheduled: set[str] = set()
        self._keyspace_seen = hubs.is_embedded(self.url)
        self._subscriptions = 0
        self._stale: set[str] = {"starting"}
        self._last_synced: float | None = None
        self._callbacks: list[_Callback] = []
        self._resync_callbacks: list[Callable[[Resync], Any]] = []
        self._bindings: list[Binding[Any]] = []
        self._waiters: list[tuple[int, asyncio.Future[bool]]] = []
        self._queue: asyncio.Queue[Coroutine[Any, Any, Any]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = False
        self._reported = False
        self._inflight: asyncio.Future[None] | None = None
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None
        db = getattr(getattr(self._store.redis, "connection_pool", None), "connection_kwargs", {})
        ks_prefix = f"__keyspace@{db.get('db', 0)}__:{self._tk.ns('')}"
        names = ["*"] if follow is None else sorted(follow)
        self._patterns = {ks_prefix + n: ks_prefix for n in names}

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Subscribe, load the state (or the cache file) and start following.

        Raises :class:`Unavailable` when Redis cannot be reached within
        ``timeout`` and there is no usable cache file.
        """
        self._wake, self._subscribed = asyncio.Event(), asyncio.Event()
        self._queue = asyncio.Queue()
        if self._configure_keyspace:
            await self._enable_keyspace_events()
        self._hub = hubs.acquire(self.url, timeout=self._timeout, ping_interval=self._interval)
        await self._hub.add(self, self._tk.changes_channel, self._patterns)
        try:
            async with asyncio.timeout(self._timeout):
                await self._subscribed.wait()
            await self._resync("start")
        except _FAILURES as exc:
            data = load_cache_file(self._cache_file, self.tenant) if self._cache_file else None
            if data is None:
                await self.aclose()
                raise Unavailable(
                    f"watcher of {self.tenant!r} cannot reach Redis and has no cache file: {exc}",
                    reason="start",
                ) from exc
            log.warning("Redis unreachable (%s); serving the cache file at revision %d", exc,
                        data.revision)  # fmt: skip
            self._state.set_schemas(data.schema_gen, dict(data.schemas))
            self._state.replace(data.epoch, data.revision, data.namespaces)
            self._stale.add("startup")
            self._need_resync = "startup"
        self._stale.discard("starting")
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sync_loop(), name="kvconf-watch-sync"),
            loop.create_task(self._tick_loop(), name="kvconf-watch-check"),
            loop.create_task(self._dispatch_loop(), name="kvconf-watch-callbacks"),
        ]
        self._wake.set()

    async def aclose(self) -> None:
        """Stop following, report leaving the fleet, write the cache file."""
        if self._closed:
            return
        self._closed = True
        try:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._hub is not None:
                await self._hub.remove(self, self._tk.changes_channel, self._patterns)
                await hubs.release(self._hub)
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_result(False)
            while self._queue is not None and not self._queue.empty():
                self._queue.get_nowait().close()
            if self._inflight is not None and not self._inflight.done():
                await asyncio.wait([self._inflight], timeout=self._timeout)
            if self._reported:
                with contextlib.suppress(*_FAILURES):
                    async with asyncio.timeout(self._timeout):
                        await self._store.redis.hdel(self._tk.fleet, self.instance_id)
            if self._cache_file is not None and self._dirty and "startup" not in self._stale:
                try:
                    await self._write_cache_file()
                except OSError as exc:
                    log.warning("cannot write cache file %s: %s", self._cache_file, exc)
        finally:
            await self._store.aclose()

    # -- reads (never touch Redis) -----------------------------------------------

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """The effective value of ``key``: namespace > ``_defaults`` > env > schema default.

        ``default`` when no layer has the key. Served from memory.
        """
        try:
            return self._state.views[namespace][key]
        except KeyError:
            return self._get_slow(namespace, key, default)

    def _get_slow(self, namespace: str, key: str, default: Any) -> Any:
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
        return bool(self._stale)

    @property
    def stale_reasons(self) -> frozenset[str]:
        """Why the watcher is stale (``check``, ``pubsub``, ``sync``, ``startup``...)."""
        return frozenset(self._stale)

    @property
    def last_synced_at(self) -> datetime | None:
        """When the cache was last confirmed to match Redis."""
        if self._last_synced is None:
            return None
        return datetime.fromtimestamp(self._last_synced, UTC)

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
        cb = _Callback(callback, namespace, None if key is None else validate_key(key))
        self._callbacks.append(cb)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(cb)

        return cancel

    def on_resync(self, callback: Callable[[Resync], Any]) -> Callable[[], None]:
        """Call ``callback(resync)`` after every resynchronisation (sync only)."""
        self._resync_callbacks.append(callback)

        def cancel() -> None:
            with contextlib.suppress(ValueError):
                self._resync_callbacks.remove(callback)

        return cancel

    def bind(self, namespace: str, cls: type[S]) -> Binding[S]:
        """A live typed view of ``namespace`` as a msgspec Struct ``cls``.

        Raises :class:`InvalidInput` when the current values do not validate.
        """
        self._check_followed(namespace)
        try:
            binding = Binding(self, namespace, cls)
        except msgspec.ValidationError as exc:
            raise InvalidInput(
                f"{self.tenant}/{namespace} does not validate as {cls.__name__}: {exc}",
                namespace=namespace,
            ) from exc
        self._bindings.append(binding)
        return binding

    async def wait_for_revision(self, revision: int, timeout: float | None = None) -> bool:
        """Wait until the cache has applied ``revision``; False on timeout."""
        if self._state.revision >= revision:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (revision, fut)
        self._waiters.append(entry)
        handle = asyncio.get_running_loop().call_later(min(0.05, self._interval), self._nudge)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return False
        finally:
            handle.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _nudge(self) -> None:
        if self._waiters and self._wake is not None:
            self._need_catchup = True
            self._wake.set()

    # -- the hub's listener interface ---------------------------------------------

    def on_event(self, event: WireEvent) -> None:
        """Called by the hub for each event on the tenant's channel."""
        state = self._state
        namespace = event.namespace
        pending = self._ks_pending.get(namespace)
        if pending:
            deleted = any(c.deleted for c in event.changes)
            self._ks_pending[namespace] = max(0, pending - len(event.changes) - deleted)
        if not self._busy and not self._pending and event.type == "change" and self._next(event):
            self._apply(event)
            return
        if event.epoch == state.epoch and event.revision <= state.revision and not self._busy:
            return
        self._pending.append(event)
        self._wakeup()

    def on_keyspace(self, namespace: str, op: str) -> None:
        """Called by the hub for a keyspace notification on a namespace hash."""
        if not self._state.follows(namespace):
            return
        self._keyspace_seen = True
        self._ks_pending[namespace] = self._ks_pending.get(namespace, 0) + 1
        if namespace not in self._ks_scheduled:
            self._ks_scheduled.add(namespace)
            loop = asyncio.get_running_loop()
            loop.call_later(_KEYSPACE_DELAY, self._keyspace_due, namespace)

    def _keyspace_due(self, namespace: str) -> None:
        self._ks_scheduled.discard(namespace)
        if self._ks_pending.get(namespace, 0) > 0:
            self._ks_pending[namespace] = 0
            self._verify.add(namespace)
            self._wakeup()

    def on_subscribed(self) -> None:
        """Called by the hub on every subscribe confirmation: catch up now."""
        self._subscriptions += 1
        self._stale.discard("pubsub")
        if self._subscribed is not None:
            self._subscribed.set()
        if self._subscriptions > 1:
            self._need_catchup = True
            if self._keyspace_seen:
                # Edits made outside kvconf while we were away left no log entry.
                self._need_resync = self._need_resync or "resubscribed"
            self._wakeup()

    def on_disconnected(self, exc: BaseException) -> None:
        """Called by the hub when the pub/sub connection fails."""
        self._stale.add("pubsub")

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- applying ------------------------------------------------------------------

    def _next(self, event: WireEvent) -> bool:
        """True if ``event`` is the next revision (a first write also starts the epoch)."""
        state = self._state
        if event.revision != state.revision + 1:
            return False
        return event.epoch == state.epoch or (state.revision == 0 and not state.epoch)

    def _apply(self, event: EventLike | WireEvent) -> None:
        self._state.epoch = event.epoch
        change = self._state.apply_event(event)
        self._applied([change] if change is not None else [], None)

    def _applied(self, changes: list[Change], resync: str | None) -> None:
        state = self._state
        touched = {c.namespace for c in changes}
        if touched or resync:
            everything = resync is not None or DEFAULTS_NAMESPACE in touched
            for binding in list(self._bindings):
                if everything or binding.namespace in touched:
                    binding._refresh()
        if self._waiters:
            for rev, fut in list(self._waiters):
                if rev <= state.revision and not fut.done():
                    fut.set_result(True)
        self._dirty = True
        if resync is not None:
            notice = Resync(state.revision, state.epoch, resync, [c.namespace for c in changes])
            for rcb in list(self._resync_callbacks):
                try:
                    rcb(notice)
                except Exception:
                    log.exception("resync callback %r raised", rcb)
        for change in changes:
            for cb in list(self._callbacks):
                if cb.wants(change):
                    self._call(cb, change)

    def _call(self, cb: _Callback, change: Change) -> None:
        try:
            result = cb.fn(change)
        except Exception:
            log.exception("change callback %r raised; the watcher goes on", cb.fn)
            return
        if inspect.isawaitable(result) and self._queue is not None:
            self._queue.put_nowait(_awaited(result))

    async def _dispatch_loop(self) -> None:
        assert self._queue is not None
        while True:
            coro = await self._queue.get()
            try:
                await coro
            except Exception:
                log.exception("async change callback raised; the watcher goes on")

    # -- synchronising ---------------------------------------------------------------

    async def _sync_loop(self) -> None:
        assert self._wake is not None
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._busy = True
            try:
                await self._process()
            except _FAILURES as exc:
                self._stale.add("sync")
                self._need_catchup = True
                log.warning("watcher of %s could not sync: %s", self.tenant, exc)
                self._busy = False
                await asyncio.sleep(hubs.backoff_delay(attempt))
                attempt += 1
                self._wake.set()
                continue
            finally:
                self._busy = False
            attempt = 0
            self._stale.discard("sync")

    async def _process(self) -> None:
        while True:
            reason, self._need_resync = self._need_resync, None
            if reason is not None:
                try:
                    await self._resync(reason)
                except BaseException:
                    self._need_resync = self._need_resync or reason
                    raise
            if self._need_catchup:
                self._need_catchup = False
                try:
                    await self._catch_up()
                except BaseException:
                    self._need_catchup = True
                    raise
            if self._verify:
                names, self._verify = self._verify, set()
                try:
                    await self._resync("keyspace", only=names)
                except BaseException:
                    self._verify |= names
                    raise
            await self._drain()
            if self._need_resync is None and not self._need_catchup and not self._verify:
                return

    async def _drain(self) -> None:
        while self._pending:
            event = self._pending.popleft()
            state = self._state
            if event.epoch != state.epoch and not self._next(event):
                await self._resync("epoch")
                continue
            if event.revision <= state.revision:
                continue
            if event.revision > state.revision + 1:
                await self._catch_up()
                if event.epoch == self._state.epoch and event.revision > self._state.revision + 1:
                    await self._resync("gap")
                if not self._next(event):
                    continue
            await self._apply_any(event)

    async def _apply_any(self, event: EventLike | WireEvent) -> None:
        kind = getattr(event, "type", "change")
        if kind == "change":
            self._apply(event)
        elif kind == "schema":
            await self._load_schemas(-1)
            self._state.revision = event.revision
            self._applied([], None)
            for binding in list(self._bindings):
                binding._refresh()
        else:
            await self._resync(kind)

    async def _position(self) -> tuple[int, str]:
        async with asyncio.timeout(self._timeout):
            rev, epoch = await self._store.redis.mget(self._tk.rev, self._tk.epoch)
        text = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
        return int(rev or 0), text

    async def _catch_up(self, until: int | None = None) -> None:
        """Replay the log after the applied revision (up to ``until``)."""
        rev, epoch = await self._position()
        state = self._state
        if epoch != state.epoch or rev < state.revision:
            await self._resync("epoch" if epoch != state.epoch else "revision went backwards")
            return
        while state.revision < rev and (until is None or state.revision < until):
            try:
                async with asyncio.timeout(max(10.0, self._timeout)):
                    events = await self._store.changes_since(
                        self.tenant, state.revision, limit=_LOG_PAGE
                    )
            except HistoryTrimmed:
                await self._resync("trimmed")
                return
            except TenantNotFound:
                await self._resync("tenant")
                return
            except Unavailable as exc:
                if exc.details.get("reason") != "corrupt_state":
                    raise
                await self._resync("log unreadable")
                return
            if not events:
                return
            for event in events:
                if until is not None and event.revision > until:
                    return
                if event.revision <= state.revision:
                    continue
                if event.epoch != state.epoch or event.revision != state.revision + 1:
                    await self._resync("gap")
                    return
                await self._apply_any(event)
        self._mark_synced(rev)

    async def _resync(self, reason: str, only: Iterable[str] | None = None) -> None:
        """Read the state atomically and apply the net difference."""
        state = self._state
        names = None if state.follow is None else sorted(state.follow)
        if only is not None:
            names = sorted(only)
        try:
            async with asyncio.timeout(max(10.0, self._timeout)):
                found = await self._store.read_state(self.tenant, names)
            epoch, rev, spaces, gen = (
                found.epoch,
                found.revision,
                found.namespaces,
                found.schema_gen,
            )
        except TenantNotFound:
            (rev, epoch), spaces, gen = await self._position(), {}, 0
            only = None
        if only is not None and (epoch != state.epoch or rev != state.revision):
            if epoch == state.epoch and rev > state.revision:
                await self._catch_up(until=rev)
            if epoch != state.epoch or rev != state.revision:
                await self._resync(reason)
                return
        if gen != state.schema_gen:
            await self._load_schemas(gen)
        changes = state.replace(epoch, rev, spaces, only)
        if reason != "keyspace" or changes:
            log.info("watcher of %s resynced (%s) at revision %d", self.tenant, reason, rev)
            self._applied(changes, reason)
        self._stale.discard("startup")
        self._mark_synced(rev)

    async def _load_schemas(self, gen: int) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                schemas = await self._store.schemas(self.tenant)
        except TenantNotFound:
            schemas = {}
        self._state.set_schemas(gen, schemas)

    def _mark_synced(self, rev: int) -> None:
        if self._state.revision >= rev:
            self._last_synced = time.time()

    # -- liveness, fleet, cache file ---------------------------------------------------

    async def _tick_loop(self) -> None:
        next_report = 0.0
        last_file = 0.0
        while True:
            await asyncio.sleep(self._interval)
            await self._check()
            now = time.monotonic()
            if self._fleet_interval > 0 and now >= next_report:
                next_report = now + self._fleet_interval
                # Shielded so that closing never races an in-flight report past its HDEL.
                self._inflight = asyncio.ensure_future(self._report())
                await asyncio.shield(self._inflight)
            if self._cache_file is not None and self._dirty and now - last_file >= 1.0:
                last_file = now
                if "startup" not in self._stale:
                    try:
                        await self._write_cache_file()
                    except OSError as exc:
                        log.warning("cannot write cache file %s: %s", self._cache_file, exc)

    async def _check(self) -> None:
        try:
            rev, epoch = await self._position()
        except _FAILURES as exc:
            if "check" not in self._stale:
                log.warning("watcher of %s is stale: revision check failed: %s", self.tenant, exc)
            self._stale.add("check")
            return
        state = self._state
        if "check" in self._stale:
            self._stale.discard("check")
            self._need_catchup = True
            self._wakeup()
        if epoch != state.epoch or rev < state.revision:
            self._need_resync = self._need_resync or "epoch"
            self._wakeup()
        elif rev > state.revision:
            await asyncio.sleep(min(0.1, self._interval / 4))
            if self._state.revision < rev:
                self._need_catchup = True
                self._wakeup()
        elif not self._stale:
            self._last_synced = time.time()

    async def _report(self) -> None:
        member = FleetMember(
            instance=self.instance_id, host=self._host, pid=os.getpid(),
            revision=self._state.revision, epoch=self._state.epoch, stale=self.stale,
            reported_at=time.time(), started_at=self._started_at,
            namespaces=sorted(self.namespaces or ()),
        )  # fmt: skip
        ttl = int(self._fleet_interval * 3000)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._store.redis.pipeline(transaction=False) as pipe:
                    pipe.hset(self._tk.fleet, self.instance_id, encode_member(member))
                    pipe.pexpire(self._tk.fleet, ttl)
                    await pipe.execute()
            self._reported = True
        except _FAILURES as exc:
            log.debug("fleet report failed: %s", exc)

    async def _write_cache_file(self) -> None:
        assert self._cache_file is not None
        state = self._state
        data = CacheFile(
            tenant=self.tenant, epoch=state.epoch, revision=state.revision,
            namespaces=state.entries, schemas=state.schemas, schema_gen=state.schema_gen,
        )  # fmt: skip
        self._dirty = False
        await asyncio.to_thread(write_cache_file, self._cache_file, data)

    async def _enable_keyspace_events(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._store.redis.config_get("notify-keyspace-events")
                current = ""
                for k, v in dict(reply).items():
                    current = v.decode() if isinstance(v, bytes) else str(v)
                    del k
                flags = set(current)
                if not ({"K", "h", "g"} <= flags or {"K", "A"} <= flags):
                    await self._store.redis.config_set(
                        "notify-keyspace-events", "".join(sorted(flags | {"K", "h", "g"}))
                    )
            self._keyspace_seen = True
        except (*_FAILURES, KvconfError) as exc:
            log.warning("keyspace notifications not enabled (%s); relying on the revision check",
                        exc)  # fmt: skip


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


class SyncWatcher:
    """Blocking :class:`Watcher` for threaded services: the same implementation on a
    background event loop. Reads are served from memory in the caller's thread;
    callbacks run on the watcher's thread.

    >>> with SyncWatcher("acme", "redis://localhost:6379/0") as watcher:
    ...     watcher.get("ai-12", "stale_timeout", 30)
    """

    def __init__(self, tenant: str, url: str | None = None, **kwargs: Any) -> None:
        self._runner = LoopThread("kvconf-watch")
        self._async = Watcher(tenant, url, **kwargs)
        try:
            self._runner.run(self._async.start())
        except BaseException:
            self._runner.close()
            raise

    @property
    def watcher(self) -> Watcher:
        """The wrapped async watcher (use it only from its own loop)."""
        return self._async

    def close(self) -> None:
        """Stop the watcher and its loop thread."""
        try:
            self._runner.run(self._async.aclose())
        finally:
            self._runner.close()

    def __enter__(self) -> SyncWatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get(self, namespace: str, key: str, default: Any = None) -> Any:
        """See :meth:`Watcher.get`."""
        return self._async.get(namespace, key, default)

    def entry(self, namespace: str, key: str) -> Entry | None:
        """See :meth:`Watcher.entry`."""
        return self._async.entry(namespace, key)

    def namespace(self, namespace: str) -> dict[str, Any]:
        """See :meth:`Watcher.namespace`."""
        return self._async.namespace(namespace)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """See :meth:`Watcher.snapshot`."""
        return self._async.snapshot()

    def bind(self, namespace: str, cls: type[S]) -> Binding[S]:
        """See :meth:`Watcher.bind`."""
        return self._runner.run(_call_soon(self._async.bind, namespace, cls))

    def on_change(
        self,
        callback: Callable[[Change], Any],
        namespace: str | None = None,
        key: str | None = None,
    ) -> Callable[[], None]:
        """See :meth:`Watcher.on_change`; callbacks run on the watcher's thread."""
        return self._runner.run(_call_soon(self._async.on_change, callback, namespace, key))

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
    def last_synced_at(self) -> datetime | None:
        """See :attr:`Watcher.last_synced_at`."""
        return self._async.last_synced_at

    wait_for_revision = blocking(Watcher.wait_for_revision)


async def _call_soon(fn: Callable[..., S], *args: Any) -> S:
    return fn(*args)
