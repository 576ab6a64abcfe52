"""The liveness check and fleet report of one tenant, shared by a process's watchers.

Every watcher needs to know, about once a second, the tenant's revision and
epoch (a lost last event, a frozen server, a replaced history) and must
report itself into the tenant's fleet hash every few seconds. Done per
watcher, a hundred watchers of one tenant in one process cost Redis about
140 commands a second while nothing happens. A :class:`TenantMonitor` does
it once per event loop, URL, tenant and timing: one ``MGET rev epoch`` per
``check_interval`` whose answer every member judges against its own cache,
and one ``HSET`` of every member's report (plus ``PEXPIRE``) per
``fleet_interval``. Watchers get their monitor from
:mod:`kvconf._watch.registry`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from redis.exceptions import RedisError

from .._redis.names import TenantKeys
from .._tasks import stop_task
from ..exceptions import Unavailable
from .fleet import FleetMember, encode_member
from .hub import client_for

__all__ = ["Member", "TenantMonitor"]

log = logging.getLogger("kvconf.watcher")

#: What a failed revision check or report may raise (the engine's sync uses them too).
FAILURES = (Unavailable, RedisError, OSError, TimeoutError)


class Member(Protocol):
    """What a watcher's engine gives its monitor."""

    instance_id: str

    def position(self) -> tuple[str, int]:
        """The (epoch, revision) the cache has applied, taken before each check."""

    def checked(self, revision: int, epoch: str, before: tuple[str, int]) -> None:
        """The tenant is at ``revision`` of ``epoch``; ``before`` is what was applied then."""

    def check_failed(self, exc: BaseException) -> None:
        """The check got no answer in time: the watcher cannot confirm it is in step."""

    def report(self) -> FleetMember:
        """This watcher's fleet report as of now."""

    def report_sent(self) -> None:
        """A report of this watcher reached Redis (so closing removes it)."""


class TenantMonitor:
    """One tenant's revision check and fleet report for every watcher of one loop."""

    def __init__(
        self,
        url: str | None,
        tenant_keys: TenantKeys,
        *,
        interval: float,
        timeout: float,
        fleet_interval: float,
    ) -> None:
        self.url = url
        self.refs = 0
        self.interval, self.timeout, self.fleet_interval = interval, timeout, fleet_interval
        self._tk = tenant_keys
        self._client: Any = client_for(url, timeout)
        self._members: dict[int, Member] = {}  # by id(): instance ids may repeat
        self._task: asyncio.Task[None] | None = None
        self._next_report = 0.0
        self._inflight: asyncio.Future[None] | None = None
        self._failing = False
        self._closing = False

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` has begun."""
        return self._closing

    def add(self, member: Member) -> None:
        """Check and report for ``member`` from the next tick on (its report at once)."""
        self._members[id(member)] = member
        self._next_report = 0.0
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name="kvconf-watch-check")

    async def remove(self, member: Member) -> None:
        """Stop checking for ``member``; wait for a report in flight (it may name it)."""
        self._members.pop(id(member), None)
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight], timeout=self.timeout)

    async def aclose(self) -> None:
        """Stop the timer and close the client."""
        self._closing = True
        if self._task is not None:
            await stop_task(self._task)
        if self._inflight is not None and not self._inflight.done():
            await asyncio.wait([self._inflight], timeout=self.timeout)
        await self._client.aclose()

    async def _run(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.interval)
            try:
                await self._tick()
            except Exception:  # one bad tick must not end the check for every watcher
                log.exception("revision check of %s failed; trying again", self._tk.tenant)

    async def _tick(self) -> None:
        await self._check()
        now = time.monotonic()
        if self.fleet_interval > 0 and now >= self._next_report and self._members:
            self._next_report = now + self.fleet_interval
            # Shielded: a member leaving waits for it, so its HDEL comes after.
            self._inflight = asyncio.ensure_future(self._report())
            await asyncio.shield(self._inflight)

    async def _check(self) -> None:
        members = list(self._members.values())
        if not members:
            return
        # What was applied before asking: events applied while the reply is in
        # flight must not look like the server's revision going backwards.
        before = [m.position() for m in members]
        try:
            async with asyncio.timeout(self.timeout):
                rev, epoch = await self._client.mget(self._tk.rev, self._tk.epoch)
        except FAILURES as exc:
            if not self._failing:
                log.warning("watchers of %s are stale: revision check failed: %s",
                            self._tk.tenant, exc)  # fmt: skip
            self._failing = True
            for member in members:
                member.check_failed(exc)
            return
        self._failing = False
        text = epoch.decode() if isinstance(epoch, bytes) else (epoch or "")
        for member, seen in zip(members, before, strict=True):
            member.checked(int(rev or 0), text, seen)

    async def _report(self) -> None:
        members = list(self._members.values())
        if not members:
            return
        body = {m.instance_id: encode_member(m.report()) for m in members}
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    pipe.hset(self._tk.fleet, mapping=body)
                    pipe.pexpire(self._tk.fleet, int(self.fleet_interval * 3000))
                    await pipe.execute()
        except FAILURES as exc:
            log.debug("fleet report failed: %s", exc)
            return
        for member in members:
            member.report_sent()
