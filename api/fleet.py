"""Fleet reports of the HTTP watchers that stream from this worker.

A :class:`kvconf.Watcher` following a ``kvconf serve`` names itself on its
stream (``X-Kvconf-Watcher: {"instance", "host", "pid", "started_at",
"namespaces"}``). The worker then reports it into the tenant's fleet hash,
as a direct-Redis watcher reports itself, with the revision its stream
delivered and the epoch it resumed in: one ``HSET`` (and ``PEXPIRE``) per
tenant every ``interval`` seconds for all of the worker's watchers of the
tenant, however many, and an ``HDEL`` when a stream ends. So ``GET
.../fleet``, ``kvconf fleet`` and the console list both kinds of watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from redis.exceptions import RedisError

from kvconf._tasks import stop_task
from kvconf._watch.fleet import FleetMember, encode_member
from kvconf.exceptions import InvalidInput, KvconfError
from kvconf.store import tenant_keys

from .metrics import StreamState

__all__ = ["HEADER", "StreamFleet", "StreamWatcher", "reporting"]

log = logging.getLogger("kvconf.api")

#: The request header an HTTP watcher names itself with.
HEADER = "X-Kvconf-Watcher"
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Identity(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """What an HTTP watcher says of itself (the header's JSON)."""

    instance: _Name
    host: Annotated[str, msgspec.Meta(max_length=255)] = ""
    pid: Annotated[int, msgspec.Meta(ge=0, le=2**31)] = 0
    started_at: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    namespaces: Annotated[list[_Name], msgspec.Meta(max_length=1000)] = []


class StreamWatcher:
    """One streaming watcher: who it is and where its stream is."""

    __slots__ = ("epoch", "identity", "position", "tenant")

    def __init__(self, tenant: str, identity: Identity, epoch: str, position: StreamState) -> None:
        self.tenant, self.identity, self.epoch, self.position = tenant, identity, epoch, position

    def report(self, now: float) -> FleetMember:
        """The fleet report of this watcher as of ``now``."""
        who = self.identity
        return FleetMember(
            instance=who.instance, host=who.host, pid=who.pid, revision=self.position.sent or 0,
            epoch=self.epoch, stale=False, reported_at=now, started_at=who.started_at,
            namespaces=who.namespaces,
        )  # fmt: skip


def parse_identity(header: str) -> Identity:
    """The header's identity; :class:`InvalidInput` when it is not one."""
    try:
        return msgspec.json.decode(header, type=Identity)
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"{HEADER} must be a watcher identity: {exc}", field=HEADER) from None


class StreamFleet:
    """Reports the worker's streaming watchers into their tenants' fleet hashes."""

    def __init__(self, redis: Any, *, interval: float = 5.0) -> None:
        self._redis = redis
        self.interval = interval
        self._members: dict[str, dict[int, StreamWatcher]] = {}
        self._gone: list[tuple[str, str]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def join(
        self, tenant: str, identity: Identity, epoch: str, position: StreamState
    ) -> StreamWatcher:
        """Report a stream's watcher from now on (a first report soon)."""
        member = StreamWatcher(tenant, identity, epoch, position)
        self._members.setdefault(tenant, {})[id(member)] = member
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kvconf-fleet")
        self._wake.set()
        return member

    def leave(self, member: StreamWatcher) -> None:
        """The stream ended: the watcher leaves the fleet report."""
        members = self._members.get(member.tenant, {})
        members.pop(id(member), None)
        if not members:
            self._members.pop(member.tenant, None)
        self._gone.append((member.tenant, member.identity.instance))
        self._wake.set()

    async def aclose(self) -> None:
        """Stop reporting (the reports expire by themselves)."""
        if self._task is not None:
            await stop_task(self._task)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._report()
            except (RedisError, KvconfError, OSError) as exc:
                log.debug("fleet report of streaming watchers failed: %s", exc)
            await asyncio.sleep(min(1.0, self.interval))  # at most one round a second

    async def _report(self) -> None:
        gone, self._gone = self._gone, []
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, instance in gone:
                pipe.hdel(tenant_keys(tenant).fleet, instance)
            for tenant, members in self._members.items():
                key = tenant_keys(tenant).fleet
                body = {m.identity.instance: encode_member(m.report(now)) for m in members.values()}
                pipe.hset(key, mapping=body)
                pipe.pexpire(key, int(self.interval * 3000))
            if gone or self._members:
                await pipe.execute()


async def reporting(
    stream: AsyncIterator[bytes], fleet: StreamFleet, member: StreamWatcher
) -> AsyncIterator[bytes]:
    """The stream's frames; its watcher leaves the fleet when it ends."""
    try:
        async for sse in stream:
            yield sse
    finally:
        fleet.leave(member)
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
