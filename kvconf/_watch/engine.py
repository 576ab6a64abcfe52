"""The watcher's synchronisation engine: invariant 5, one tenant.

Events from the shared hub are applied inline when they are the next
revision; anything else (a gap, a new epoch, a resubscription, a keyspace
notification, a failed check) is queued for one sync task that catches up
from the log, or resynchronises from an atomic state read, strictly in
revision order. A timer checks the tenant's revision and epoch with a short
timeout: that is also the liveness signal behind ``stale``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from .._redis.connect import enable_keyspace_events
from .._redis.names import DEFAULTS_NAMESPACE, TenantKeys
from ..exceptions import HistoryTrimmed, KvconfError, TenantNotFound, Unavailable
from ..store import Store
from . import hub as hubs
from .cache_file import CacheFile, write_cache_file
from .callbacks import Binding, Callback, Resync, awaited
from .fleet import FleetMember, encode_member
from .reader import CachedReader
from .state import CacheState, Change, EventLike, WireEvent

__all__ = ["FAILURES", "WatchEngine"]

log = logging.getLogger("kvconf.watcher")

FAILURES = (Unavailable, RedisError, OSError, TimeoutError)
_FAILURES = FAILURES
_LOG_PAGE = 500
_KEYSPACE_DELAY = 0.05


class WatchEngine(CachedReader):
    """Keeps a :class:`CacheState` in step with one tenant (base of ``Watcher``).

    Slotted, like ``Watcher``: an instance without a ``__dict__`` keeps the
    cached ``get`` at its fastest.
    """

    __slots__ = (
        "__weakref__", "_bindings", "_busy", "_cache_file", "_callbacks", "_closed", "_dirty",
        "_fleet_interval", "_host", "_inflight", "_interval", "_keyspace_seen", "_ks_pending",
        "_ks_scheduled", "_last_synced", "_need_catchup", "_need_resync", "_pending", "_queue",
        "_reported", "_resync_callbacks", "_stale", "_started_at", "_state", "_store",
        "_subscribed", "_subscriptions", "_timeout", "_tk", "_verify", "_waiters", "_wake",
        "instance_id", "namespaces", "tenant",
    )  # fmt: skip

    tenant: str
    namespaces: frozenset[str] | None
    instance_id: str
    _tk: TenantKeys
    _state: CacheState
    _store: Store
    _interval: float
    _timeout: float
    _cache_file: Path | None
    _fleet_interval: float
    _host: str
    _started_at: float
    _pending: deque[WireEvent]
    _busy: bool
    _need_resync: str | None
    _need_catchup: bool
    _verify: set[str]
    _ks_pending: dict[str, int]
    _ks_scheduled: set[str]
    _keyspace_seen: bool
    _subscriptions: int
    _stale: set[str]
    _last_synced: float | None
    _callbacks: list[Callback]
    _resync_callbacks: list[Any]
    _bindings: list[Binding[Any]]
    _waiters: list[tuple[int, asyncio.Future[bool]]]
    _queue: asyncio.Queue[Coroutine[Any, Any, Any]] | None
    _dirty: bool
    _reported: bool
    _inflight: asyncio.Future[None] | None
    _wake: asyncio.Event | None
    _closed: bool
    _subscribed: asyncio.Event | None

    @property
    def stale(self) -> bool:
        """True while the watcher cannot confirm it is in step with Redis."""
        return bool(self._stale)

    @property
    def unanswered(self) -> bool:
        """True while Redis does not answer the revision check (down or frozen).

        The cache then holds the state last confirmed in step, which is all
        anyone can read: a reader may serve it, marked stale.
        """
        return "check" in self._stale and not ({"startup", "starting"} & self._stale)

    # -- the hub's listener interface ---------------------------------------------

    def on_event(self, event: WireEvent) -> None:
        """Called by the hub for each event on the tenant's channel."""
        state = self._state
        if self._ks_pending:
            self._account_keyspace(event)
        if not self._busy and not self._pending and event.type == "change" and self._next(event):
            self._apply(event)
            return
        if event.epoch == state.epoch and event.revision <= state.revision and not self._busy:
            return
        self._pending.append(event)
        self._wakeup()

    def _account_keyspace(self, event: WireEvent) -> None:
        """Subtract the notifications kvconf's own write caused (one per key, maybe a del)."""
        counts: dict[str, int] = {}
        deletes: set[str] = set()
        for kc in event.changes:
            ns = kc.namespace or event.namespace
            counts[ns] = counts.get(ns, 0) + 1
            if kc.deleted:
                deletes.add(ns)  # Redis adds a "del" when the hash became empty
        for ns, count in counts.items():
            pending = self._ks_pending.get(ns)
            if pending:
                self._ks_pending[ns] = max(0, pending - count - (ns in deletes))

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
        self._applied(self._state.apply_event(event), None)

    def _applied(self, changes: list[Change], resync: str | None) -> None:
        state = self._state
        touched = {c.namespace for c in changes}
        if touched or resync:
            everything = resync is not None or DEFAULTS_NAMESPACE in touched
            for binding in list(self._bindings):
                if everything or binding.namespace in touched:
                    binding.refresh()
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
        while not self._closed:
            coro = await self._queue.get()
            try:
                await coro
            except Exception:
                log.exception("async change callback raised; the watcher goes on")

    # -- synchronising ---------------------------------------------------------------

    async def _sync_loop(self) -> None:
        assert self._wake is not None
        attempt = 0
        while not self._closed:
            await self._wake.wait()
            if self._closed:
                return
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
            state = self._state
            before = state.effective_views(state.schema_scope(event.namespace))
            await self._load_schemas(-1)
            state.revision = event.revision
            self._applied(state.schema_changes(event.revision, before, event.actor), None)
            for binding in list(self._bindings):
                binding.refresh()  # the schema may change what validates
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
        while not self._closed:
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
        # What was applied before asking: events applied while the reply is in
        # flight must not look like the server's revision going backwards.
        before_epoch, before_rev = self._state.epoch, self._state.revision
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
        if epoch != state.epoch or (epoch == before_epoch and rev < before_rev):
            self._need_resync = self._need_resync or (
                "epoch" if epoch != state.epoch else "revision went backwards"
            )
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
                await enable_keyspace_events(self._store.redis)
            self._keyspace_seen = True
        except (*_FAILURES, KvconfError) as exc:
            log.warning("keyspace notifications not enabled (%s); relying on the revision check",
                        exc)  # fmt: skip
