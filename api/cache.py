"""The API's read cache: one :class:`~kvconf.Watcher` per recently read tenant.

Reads of keys, namespaces and the per-AI view are served from a watcher's
memory when it can vouch for its state, and from Redis otherwise. The
contract, per worker process (each uvicorn worker has its own cache):

- **Read-your-writes in a process.** Every write route records the revision
  it committed (:meth:`ReadCache.wrote`); until this process's watcher of the
  tenant has applied it, reads of that tenant go to Redis. Operations that
  change a tenant without a revision (delete, undelete, restore, create)
  drop the tenant's watcher (:meth:`ReadCache.forget`).
- **Bounded staleness across processes.** A write made elsewhere is served
  here once the watcher applies its event (about a millisecond on a healthy
  server). A watcher that cannot confirm it is in step (``stale``: starting,
  pub/sub lost, revision check failing) is not used. A soft delete made
  elsewhere (no event) is noticed by a tenant check every ``check_interval``.
- **Redis not answering.** While a watcher's revision check gets no answer
  (a frozen or dead server), its last confirmed state is still served, with
  ``X-Kvconf-Stale: true`` (:func:`stale_headers`); misses still go to Redis.
- **Misses go to Redis.** A key the cache lacks is read from Redis, so a 404
  says precisely whether the key or the tenant is unknown.
- ``?consistent=true`` (or ``Cache-Control: no-cache``) forces a Redis read.
- **Never back in time.** The highest revision this process served for a
  tenant, from Redis or from memory, is kept (:meth:`ReadCache.saw`); a
  watcher behind it (a lost event it has not noticed yet, a reconnect) is
  not used until it catches up, so a reader never sees a revision older than
  one this worker already answered with.

A watcher is started only for a tenant a Redis read just found (unknown
tenants never start one), in the background, at most ``starts_per_second``,
for at most ``max_tenants`` tenants (least recently read evicted; idle ones
closed after ``idle_seconds``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from kvconf.config import Settings
from kvconf.exceptions import KvconfError
from kvconf.models import Entry, KeySpec
from kvconf.store import Store
from kvconf.watcher import Watcher

__all__ = ["STALE_HEADER", "ReadCache", "namespace_entries", "stale_headers", "wants_consistent"]

#: Response header of a read served from a watcher that Redis is not answering.
STALE_HEADER = "X-Kvconf-Stale"
_STALE = {STALE_HEADER: "true"}

log = logging.getLogger("kvconf.api")

_FAILURE_PAUSE = 5.0
#: The true spellings of ``?consistent=`` that FastAPI's bool parsing accepts.
_CONSISTENT = frozenset(f"consistent={v}" for v in ("true", "1", "yes", "on", "t", "y"))


class _Slot:
    __slots__ = ("last_read", "watcher")

    def __init__(self, watcher: Watcher, now: float) -> None:
        self.watcher = watcher
        self.last_read = now


class ReadCache:
    """Watchers of recently read tenants, with the rules that say when to trust them."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        max_tenants: int = 64,
        idle_seconds: float = 300.0,
        starts_per_second: float = 4.0,
        check_interval: float = 1.0,
        barrier_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.settings = settings
        self.max_tenants = max_tenants
        self.idle_seconds = idle_seconds
        self.starts_per_second = starts_per_second
        self.check_interval = check_interval
        self.barrier_seconds = barrier_seconds
        self._slots: dict[str, _Slot] = {}
        #: tenant → (epoch, revision, until): the last write of this process.
        self._barriers: dict[str, tuple[str, int, float]] = {}
        self._starting: set[str] = set()
        self._failed: dict[str, float] = {}
        self._tokens = float(max(1.0, starts_per_second))
        self._refilled = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._maintain: asyncio.Task[None] | None = None
        self._closed = False
        self._specs: dict[tuple[int, str], tuple[object, dict[str, KeySpec]]] = {}
        #: tenant → (epoch or None, revision, when marked): the newest state
        #: this process served.
        self._served: dict[str, tuple[str | None, int, float]] = {}

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> ReadCache:
        self._maintain = asyncio.get_running_loop().create_task(
            self._maintenance(), name="kvconf-api-cache"
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every watcher and stop the background work."""
        self._closed = True  # loops stop on it too: a library may swallow a cancellation
        if self._maintain is not None:
            self._maintain.cancel()
            await asyncio.wait([self._maintain])
        for task in list(self._tasks):
            if task.get_name() == "kvconf-api-cache-start":
                task.cancel()  # closing tasks run to the end
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            await self._close(slot)

    @property
    def tenants(self) -> list[str]:
        """Tenants with a watcher (started or starting is not included)."""
        return sorted(self._slots)

    def watchers(self) -> dict[str, Watcher]:
        """Every started watcher by tenant, stale or not (for metrics)."""
        return {tenant: slot.watcher for tenant, slot in self._slots.items()}

    # -- the read side -------------------------------------------------------------

    def reader(self, tenant: str) -> Watcher | None:
        """The tenant's watcher if reads may be served from it now, else None."""
        slot = self._slots.get(tenant)
        if slot is None:
            return None
        watcher = slot.watcher
        # A watcher stale only because Redis does not answer (frozen, down)
        # holds the last confirmed state: serve it, marked stale (see
        # stale_headers), rather than hold the request for the socket timeout.
        if watcher.stale and not _unanswered(watcher):
            return None
        now = time.monotonic()
        barrier = self._barriers.get(tenant)
        if (
            barrier is not None
            and now < barrier[2]
            and (watcher.epoch != barrier[0] or watcher.revision < barrier[1])
        ):
            return None
        served = self._served.get(tenant)
        if served is not None:
            epoch, revision, marked = served
            if epoch is not None and epoch != watcher.epoch:
                # Revisions of two epochs do not compare. The watcher is the
                # newer only if it confirmed its epoch after the mark was taken.
                synced = watcher.last_synced_at
                if synced is None or synced.timestamp() <= marked:
                    return None
            elif watcher.revision < revision:
                return None
        if served is None or served[1] != watcher.revision or served[0] != watcher.epoch:
            self._served[tenant] = (watcher.epoch, watcher.revision, time.time())
        slot.last_read = now
        return watcher

    def saw(self, tenant: str, epoch: str | None, revision: int) -> None:
        """A Redis read of ``tenant`` served ``revision`` (of ``epoch``; None: unknown).

        Cached reads of the tenant wait (go to Redis) until its watcher has
        reached it. A different epoch replaces the mark: the tenant's history
        was replaced and revisions are not comparable across it.
        """
        old = self._served.get(tenant)
        if old is not None:
            if epoch is None:
                epoch = old[0]
            if epoch == old[0] and old[1] >= revision:
                return
        elif len(self._served) > 10_000:
            self._served.clear()
        self._served[tenant] = (epoch, revision, time.time())

    def specs(self, watcher: Watcher, namespace: str) -> dict[str, KeySpec]:
        """The watcher's merged specs of ``namespace``, cached until its schemas change."""
        # The watcher swaps its schemas dict whole on every schema change.
        schemas = watcher._state.schemas
        key = (id(watcher), namespace)
        hit = self._specs.get(key)
        if hit is not None and hit[0] is schemas:
            return hit[1]
        specs = watcher.specs(namespace)
        if len(self._specs) > 10_000:
            self._specs.clear()
        self._specs[key] = (schemas, specs)
        return specs

    def found(self, tenant: str) -> None:
        """A Redis read just found ``tenant``: start a watcher for it if allowed."""
        if tenant in self._slots or tenant in self._starting or self._closed:
            return
        now = time.monotonic()
        failed = self._failed.get(tenant)
        if failed is not None and now < failed:
            return
        self._tokens = min(
            float(max(1.0, self.starts_per_second)),
            self._tokens + (now - self._refilled) * self.starts_per_second,
        )
        self._refilled = now
        if self._tokens < 1.0 or len(self._starting) >= 2:
            return
        self._tokens -= 1.0
        self._starting.add(tenant)
        self._spawn(self._start(tenant), "kvconf-api-cache-start")

    # -- the write side ----------------------------------------------------------------

    def wrote(self, tenant: str, epoch: str, revision: int) -> None:
        """This process committed ``revision`` of ``tenant``: reads wait for it."""
        until = time.monotonic() + self.barrier_seconds
        old = self._barriers.get(tenant)
        if old is not None and old[0] == epoch and old[1] > revision:
            revision = old[1]
        self._barriers[tenant] = (epoch, revision, until)

    def forget(self, tenant: str) -> None:
        """Drop the tenant's watcher (it changed in a way watchers may not see)."""
        self._failed.pop(tenant, None)
        self._served.pop(tenant, None)
        self._barriers.pop(tenant, None)
        slot = self._slots.pop(tenant, None)
        if slot is not None:
            self._spawn(self._close(slot))

    # -- internals ---------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str = "kvconf-api-cache-close") -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, tenant: str) -> None:
        watcher = Watcher(
            tenant, self.settings.redis_url, settings=self.settings, fleet_interval=0,
            check_interval=self.check_interval,
        )  # fmt: skip
        try:
            await watcher.start()
        except (KvconfError, OSError) as exc:
            log.info("read cache: no watcher for %s (%s); reads go to Redis", tenant, exc)
            self._failed[tenant] = time.monotonic() + _FAILURE_PAUSE
            return
        except BaseException:
            await watcher.aclose()
            raise
        finally:
            self._starting.discard(tenant)
        if self._closed or tenant in self._slots:
            await watcher.aclose()
            return
        self._slots[tenant] = _Slot(watcher, time.monotonic())
        while len(self._slots) > self.max_tenants:
            oldest = min(self._slots, key=lambda t: self._slots[t].last_read)
            self._spawn(self._close(self._slots.pop(oldest)))

    async def _close(self, slot: _Slot) -> None:
        for key in [k for k in self._specs if k[0] == id(slot.watcher)]:
            del self._specs[key]
        try:
            await slot.watcher.aclose()
        except (KvconfError, OSError) as exc:
            log.debug("read cache: closing a watcher: %s", exc)

    async def _maintenance(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.check_interval)
            now = time.monotonic()
            for tenant, (_, _, until) in list(self._barriers.items()):
                if now >= until:
                    del self._barriers[tenant]
            for tenant, failed in list(self._failed.items()):
                if now >= failed:
                    del self._failed[tenant]
            for tenant, slot in list(self._slots.items()):
                gone = now - slot.last_read > self.idle_seconds
                if not gone:
                    try:
                        gone = not await self.store.exists(tenant)
                    except KvconfError:
                        continue
                if gone and self._slots.get(tenant) is slot and not self._closed:
                    del self._slots[tenant]
                    self._spawn(self._close(slot))


def namespace_entries(watcher: Watcher, namespace: str) -> Mapping[str, Entry]:
    """The watcher's own entries of one namespace, without copying the tenant.

    ``Watcher.entries()`` copies every namespace; the cache's per-namespace
    dicts are replaced whole on change (never mutated), so handing out the
    current one is safe.
    """
    watcher.entry(namespace, "_")  # validates the name as Watcher reads do
    found: Mapping[str, Entry] = watcher._state.entries.get(namespace, {})
    return found


def stale_headers(watcher: Watcher, headers: dict[str, str] | None = None) -> dict[str, str] | None:
    """``headers`` plus ``X-Kvconf-Stale: true`` when ``watcher`` cannot reach Redis."""
    if not watcher.stale:
        return headers
    return {**headers, **_STALE} if headers else dict(_STALE)


def wants_consistent(query: str, cache_control: str | None) -> bool:
    """True when the caller asked for a Redis read (``?consistent=true``, ``no-cache``)."""
    if cache_control is not None and "no-cache" in cache_control.lower():
        return True
    return "consistent=" in query and any(part.lower() in _CONSISTENT for part in query.split("&"))


def _unanswered(watcher: Watcher) -> bool:
    """True while the watcher is stale only because Redis does not answer (down or frozen).

    Its cache then holds the state last confirmed in step, which is all
    anyone can read: a reader may serve it, marked stale.
    """
    reasons = watcher.stale_reasons
    return "check" in reasons and not ({"startup", "starting"} & reasons)
