"""The watcher's synchronisation engine: invariant 5, one tenant.

Events from the shared hub are applied inline when they are the next
revision; anything else (a gap, a new epoch, a resubscription, a keyspace
notification, a failed check) is queued for one sync task that catches up
from the log, or resynchronises from an atomic state read, strictly in
revision order. The tenant's :class:`~kvconf._watch.monitor.TenantMonitor`
(shared by the process's watchers of the tenant) checks its revision and
epoch with a short timeout and hands each engine the answer: that is also
the liveness signal behind ``stale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._redis.connect import enable_keyspace_events
from .._redis.internals import database_of
from .._redis.names import keyspace_channel
from ..config import Settings
from ..exceptions import HistoryTrimmed, KvconfError, TenantNotFound, Unavailable
from ..models import ChangeEvent, TenantState
from ..store import Store, tenant_keys
from . import registry
from .backoff import Backoff
from .cache_file import load_cache_file
from .delivery import Delivery
from .fleet import FleetMember
from .hub import SharedHub, client_for, is_embedded
from .monitor import FAILURES, TenantMonitor
from .state import CacheState, Change

__all__ = ["FAILURES", "WatchEngine"]

log = logging.getLogger("kvconf.watcher")


_LOG_PAGE = 500
_KEYSPACE_DELAY = 0.05


class WatchEngine:
    """Keeps a :class:`CacheState` in step with one tenant: the collaborator a
    :class:`~kvconf.Watcher` holds.

    The engine is what the hub talks to (the :class:`~kvconf._watch.hub.Listener`
    methods below): the watcher's public surface never sees those hooks. It also
    runs the watcher's callbacks, bindings and waiters, since applying a change
    and announcing it are one step.
    """

    def __init__(
        self,
        tenant: str,
        url: str | None,
        *,
        follow: frozenset[str] | None,
        settings: Settings,
        environ: Mapping[str, str],
        check_interval: float,
        timeout: float,
        cache_file: Path | None,
        configure_keyspace_events: bool,
        fleet_interval: float,
        instance_id: str | None,
    ) -> None:
        self.tenant = tenant
        self.url = url
        self.namespaces = follow
        self._tk = tenant_keys(tenant)
        self.state = CacheState(follow, environ, settings.defaults_env_prefix)
        self._store = Store(settings=settings, client=client_for(url, timeout))
        self.interval = check_interval
        self._timeout = timeout
        self._cache_file = cache_file
        self._configure_keyspace = configure_keyspace_events
        self._fleet_interval = fleet_interval
        host = socket.gethostname()
        self.instance_id = instance_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._host, self._started_at = host, time.time()
        self.hub: SharedHub | None = None
        self.monitor: TenantMonitor | None = None
        self._pending: deque[ChangeEvent] = deque()
        self._busy = True
        self._need_resync: str | None = None
        self._need_catchup = False
        self._verify: set[str] = set()
        self._ks_pending: dict[str, int] = {}
        self._ks_scheduled: set[str] = set()
        self._keyspace_seen = is_embedded(url)
        self.subscriptions = 0
        self.stale_reasons: set[str] = {"starting"}
        self.last_synced: float | None = None
        self.delivery = Delivery(tenant, self.state, cache_file)
        self.delivery.confirmed = lambda: "startup" not in self.stale_reasons
        self._tasks: list[asyncio.Task[None]] = []
        self.reported = False
        self._closed = False
        self._wake: asyncio.Event | None = None
        self._subscribed: asyncio.Event | None = None
        ks_prefix = keyspace_channel(self._tk.ns(""), database_of(self._store.redis))
        names = ["*"] if follow is None else sorted(follow)
        self._patterns = {ks_prefix + n: ks_prefix for n in names}

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe, load the state (or the cache file) and start following."""
        self._wake, self._subscribed = asyncio.Event(), asyncio.Event()
        if self._configure_keyspace:
            await self._enable_keyspace_events()
        self.hub = registry.acquire(self.url, timeout=self._timeout, ping_interval=self.interval)
        await self.hub.add(self, self._tk.changes_channel, self._patterns)
        try:
            async with asyncio.timeout(self._timeout):
                await self._subscribed.wait()
            await self._resync("start")
        except FAILURES as exc:
            data = load_cache_file(self._cache_file, self.tenant) if self._cache_file else None
            why = str(exc) or f"no answer within {self._timeout:g} s"  # a timeout says nothing
            if data is None:
                raise Unavailable(
                    f"watcher of {self.tenant!r} cannot reach Redis and has no cache file: {why}",
                    reason="start",
                ) from exc
            log.warning("Redis unreachable (%s); serving the cache file at revision %d", why,
                        data.revision)  # fmt: skip
            self.state.set_schemas(data.schema_gen, dict(data.schemas))
            self.state.replace(data.epoch, data.revision, data.namespaces)
            self.stale_reasons.add("startup")
            self._need_resync = "startup"
        self.stale_reasons.discard("starting")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._sync_loop(), name="kvconf-watch-sync")]
        self._tasks += [loop.create_task(c, name=n) for n, c in self.delivery.loops()]
        self.monitor = registry.acquire_monitor(
            self.url, self._tk, interval=self.interval, timeout=self._timeout,
            fleet_interval=self._fleet_interval,
        )  # fmt: skip
        self.monitor.add(self)
        self._wake.set()

    async def aclose(self) -> None:
        """Stop following, report leaving the fleet, write the cache file (again: nothing)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.monitor is not None:
                # Waits for a fleet report in flight, so the HDEL below comes after it.
                await self.monitor.remove(self)
                await registry.release_monitor(self.monitor)
            await self._stop_tasks()
            if self.hub is not None:
                await self.hub.remove(self, self._tk.changes_channel, self._patterns)
                await registry.release(self.hub)
            self.delivery.close()
            if self.reported:
                with contextlib.suppress(*FAILURES):
                    async with asyncio.timeout(self._timeout):
                        await self._store.redis.hdel(self._tk.fleet, self.instance_id)
            await self.delivery.save()
        finally:
            await self._store.aclose()

    async def _stop_tasks(self) -> None:
        # The loops also check ``_closed``: a cancellation swallowed by a
        # library call must not leave a task running (or aclose waiting).
        if self._wake is not None:
            self._wake.set()
        self.delivery.closed = True
        self.delivery.wake_loops()
        pending = set(self._tasks)
        for _ in range(20):
            if not pending:
                break
            # redis-py (8.1) often swallows a cancellation that lands inside a
            # command, so cancel again until every task has really ended.
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
        for task in pending:
            log.warning("watcher task %s did not stop", task.get_name())
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("watcher task %s failed", task.get_name(), exc_info=task.exception())

    def nudge(self) -> None:
        """Catch up now if someone waits for a revision (a lost last event)."""
        if self.delivery.waiters and self._wake is not None:
            self._need_catchup = True
            self._wake.set()

    # -- the hub's listener interface ---------------------------------------------

    def on_event(self, event: ChangeEvent) -> None:
        """Called by the hub for each event on the tenant's channel."""
        state = self.state
        if self._ks_pending:
            self._account_keyspace(event)
        if not self._busy and not self._pending and event.type == "change" and self._next(event):
            self._apply(event)
            return
        if event.epoch == state.epoch and event.revision <= state.revision and not self._busy:
            return
        self._pending.append(event)
        self._wakeup()

    def _account_keyspace(self, event: ChangeEvent) -> None:
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
        if not self.state.follows(namespace):
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
        self.subscriptions += 1
        self.stale_reasons.discard("pubsub")
        if self._subscribed is not None:
            self._subscribed.set()
        if self.subscriptions > 1:
            self._need_catchup = True
            if self._keyspace_seen:
                # Edits made outside kvconf while we were away left no log entry.
                self._need_resync = self._need_resync or "resubscribed"
            self._wakeup()

    def on_disconnected(self, exc: BaseException) -> None:
        """Called by the hub when the pub/sub connection fails."""
        self.stale_reasons.add("pubsub")

    def _wakeup(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- applying ------------------------------------------------------------------

    def _next(self, event: ChangeEvent) -> bool:
        """True if ``event`` is the next revision (a first write also starts the epoch)."""
        state = self.state
        if event.revision != state.revision + 1:
            return False
        return event.epoch == state.epoch or (state.revision == 0 and not state.epoch)

    def _apply(self, event: ChangeEvent) -> None:
        self.state.epoch = event.epoch
        self._applied(self.state.apply_event(event), None)

    def _applied(self, changes: list[Change], resync: str | None) -> None:
        self.delivery.applied(changes, resync)

    # -- synchronising ---------------------------------------------------------------

    async def _sync_loop(self) -> None:
        assert self._wake is not None
        backoff = Backoff()
        while not self._closed:
            await self._wake.wait()
            if self._closed:
                return
            self._wake.clear()
            self._busy = True
            try:
                await self._process()
            except FAILURES as exc:
                self.stale_reasons.add("sync")
                self._need_catchup = True
                log.warning("watcher of %s could not sync: %s", self.tenant, exc)
                self._busy = False
                await asyncio.sleep(backoff.down())
                self._wake.set()
                continue
            finally:
                self._busy = False
            backoff.reset()
            self.stale_reasons.discard("sync")

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
            state = self.state
            if event.epoch != state.epoch and not self._next(event):
                await self._resync("epoch")
                continue
            if event.revision <= state.revision:
                continue
            if event.revision > state.revision + 1:
                await self._catch_up()
                if event.epoch == self.state.epoch and event.revision > self.state.revision + 1:
                    await self._resync("gap")
                if not self._next(event):
                    continue
            await self._apply_any(event)

    async def _apply_any(self, event: ChangeEvent) -> None:
        kind = getattr(event, "type", "change")
        if kind == "change":
            self._apply(event)
        elif kind == "schema":
            state = self.state
            before = state.effective_views(state.schema_scope(event.namespace))
            await self._load_schemas(-1)
            state.revision = event.revision
            self.delivery.schema_applied(state.schema_changes(event.revision, before, event.actor))
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
        state = self.state
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
        state = self.state
        names = None if state.follow is None else sorted(state.follow)
        if only is not None:
            names = sorted(only)
        try:
            found = await self._read_state(names)
        except TenantNotFound:
            # The position is read before the state is read again: a first write
            # landing in between must come as an event after that position, never
            # be taken as applied to an empty cache.
            position = await self._position()
            try:
                found = await self._read_state(names)
            except TenantNotFound:
                found = None
        if found is None:
            (rev, epoch), spaces, gen = position, {}, 0
            only = None
        else:
            epoch, rev, spaces, gen = (
                found.epoch,
                found.revision,
                found.namespaces,
                found.schema_gen,
            )
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
        self.stale_reasons.discard("startup")
        self._mark_synced(rev)

    async def _read_state(self, names: list[str] | None) -> TenantState:
        async with asyncio.timeout(max(10.0, self._timeout)):
            return await self._store.read_state(self.tenant, names)

    async def _load_schemas(self, gen: int) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                schemas = await self._store.schemas(self.tenant)
        except TenantNotFound:
            schemas = {}
        self.state.set_schemas(gen, schemas)

    def _mark_synced(self, rev: int) -> None:
        if self.state.revision >= rev:
            self.last_synced = time.time()

    # -- liveness and fleet (for the shared TenantMonitor), cache file -----------------

    def position(self) -> tuple[str, int]:
        """The (epoch, revision) applied so far (the monitor takes it before each check)."""
        return self.state.epoch, self.state.revision

    def checked(self, revision: int, epoch: str, before: tuple[str, int]) -> None:
        """The monitor read the tenant at ``revision`` of ``epoch``; ``before`` is what
        this cache had applied when it asked (events applied while the reply was in
        flight must not look like the server's revision going backwards)."""
        state = self.state
        if "check" in self.stale_reasons:
            self.stale_reasons.discard("check")
            self._need_catchup = True
            self._wakeup()
        before_epoch, before_rev = before
        if epoch != state.epoch or (epoch == before_epoch and revision < before_rev):
            self._need_resync = self._need_resync or (
                "epoch" if epoch != state.epoch else "revision went backwards"
            )
            self._wakeup()
        elif revision > state.revision:
            # Its event may be on the way: catch up only if it has not come soon.
            loop = asyncio.get_running_loop()
            loop.call_later(min(0.1, self.interval / 4), self._behind, revision)
        elif not self.stale_reasons:
            self.last_synced = time.time()

    def _behind(self, revision: int) -> None:
        if not self._closed and self.state.revision < revision:
            self._need_catchup = True
            self._wakeup()

    def check_failed(self, exc: BaseException) -> None:
        """The monitor's check failed (it logs once for all its members)."""
        self.stale_reasons.add("check")

    def report(self) -> FleetMember:
        """This watcher's fleet report as of now."""
        return FleetMember(
            instance=self.instance_id, host=self._host, pid=os.getpid(),
            revision=self.state.revision, epoch=self.state.epoch, stale=bool(self.stale_reasons),
            reported_at=time.time(), started_at=self._started_at,
            namespaces=sorted(self.namespaces or ()),
        )  # fmt: skip

    def report_sent(self) -> None:
        """A report naming this watcher reached Redis: closing removes it."""
        self.reported = True

    async def _enable_keyspace_events(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await enable_keyspace_events(self._store.redis)
            self._keyspace_seen = True
        except (*FAILURES, KvconfError) as exc:
            log.warning("keyspace notifications not enabled (%s); relying on the revision check",
                        exc)  # fmt: skip
