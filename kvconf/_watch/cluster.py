"""The watchers' hub on Redis Cluster: one node hub per primary, listeners routed by slot.

A tenant's change channel ``kvconf:{t}:changes`` and its namespace hashes
share the tenant's hash slot, so both its sharded subscription (SSUBSCRIBE
must reach the shard's node) and its keyspace notifications (node-local)
live on the primary that owns that slot. The cluster hub keeps one
:class:`~kvconf._watch.hub.Hub` per such primary (one pub/sub connection per
node and event loop, shared by every watcher whose tenant lives there) and
places each listener on the hub of its slot's owner, read from the slot
table of a ``RedisCluster`` client.

Listeners follow the topology. A node that drops a channel (Redis 7 sends
``sunsubscribe`` when the channel's slot moves away) or whose connection
fails (a failover) makes the hub re-read the slot table and move the
listeners whose slot is now served elsewhere; a moved listener hears
``on_subscribed`` from its new node and catches up from the log, as after
any reconnect. Meanwhile the watcher's revision check keeps it correct:
pub/sub only makes it fast.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisClusterException, RedisError

from .._redis.internals import node_for_slot, refresh_slots
from .._tasks import stop_task
from ..config import safe_url
from .backoff import Backoff
from .hub import Hub, Listener, client_for

__all__ = ["ClusterHub", "node_url"]

log = logging.getLogger("kvconf.watcher")

_TOPOLOGY_FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)
# After a node dropped a channel, how often to re-read a slot table that
# still names that node (the others may learn of the move a moment later).
_STALE_TABLE_TRIES = 10
_STALE_TABLE_DELAY = 0.1

_Sub = tuple[Listener, str]  # (listener, channel)


def node_url(url: str, host: str, port: int) -> str:
    """The URL of one node of the Cluster at ``url``: same scheme, credentials, options."""
    parts = urlsplit(url)
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    userinfo, at, _ = parts.netloc.rpartition("@")
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    query = "&".join(
        item for item in parts.query.split("&") if item and item.split("=", 1)[0] != "cluster"
    )
    return urlunsplit((scheme, f"{userinfo}{at}{address}", parts.path, query, ""))


class ClusterHub:
    """The shared subscriber for a Cluster URL: a :class:`Hub` per primary node."""

    def __init__(self, url: str, *, timeout: float = 2.0, ping_interval: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.refs = 0
        self._client = client_for(url, timeout)  # a RedisCluster: only its slot table is used
        self._fresh = False  # the slot table was just read
        self._nodes: dict[str, Hub] = {}  # node name (host:port) -> its hub
        self._subs: dict[_Sub, dict[str, str]] = {}  # every subscription -> its patterns
        self._where: dict[_Sub, str] = {}  # the routed ones -> node name
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._router: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def closing(self) -> bool:
        """True once :meth:`aclose` has begun."""
        return self._closing

    @property
    def connected(self) -> bool:
        """True while every listener is on a node hub whose connection is up."""
        hubs = self._nodes.values()
        return len(self._where) == len(self._subs) and all(hub.connected for hub in hubs)

    @property
    def node_hubs(self) -> dict[str, Hub]:
        """The per-node hubs by node name (``host:port``)."""
        return dict(self._nodes)

    def node_of(self, listener: Listener, channel: str) -> str | None:
        """The node whose hub ``listener`` is on for ``channel`` (None: not routed yet)."""
        return self._where.get((listener, channel))

    async def add(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Subscribe ``listener`` on the node that owns ``channel``'s slot."""
        sub = (listener, channel)
        self._subs[sub] = dict(patterns)
        try:
            async with self._lock:
                node = await self._owner(channel)
                if sub in self._subs:  # not removed while the slot table was read
                    await self._place(sub, node)
        except _TOPOLOGY_FAILURES as exc:
            log.warning("cannot read the slot table of %s: %s", safe_url(self.url or ""), exc)
            listener.on_disconnected(exc)
            self._kick()  # the router places it once the table can be read

    async def remove(self, listener: Listener, channel: str, patterns: dict[str, str]) -> None:
        """Unsubscribe ``listener``; close a node hub nobody uses any more."""
        sub = (listener, channel)
        async with self._lock:
            self._subs.pop(sub, None)
            name = self._where.pop(sub, None)
            if name is not None:
                await self._nodes[name].remove(listener, channel, patterns)
                await self._close_idle(name)

    async def aclose(self) -> None:
        """Stop the router, close every node hub and the topology client."""
        self._closing = True
        if self._router is not None:
            await stop_task(self._router)
        for hub in list(self._nodes.values()):
            await hub.aclose()
        self._nodes.clear()
        await self._client.aclose()

    # -- routing ----------------------------------------------------------------------

    async def _owner(self, channel: str, *, refresh: bool = False) -> Any:
        """The primary that owns ``channel``'s slot (a redis-py ``ClusterNode``)."""
        async with asyncio.timeout(self.timeout):
            if not self._fresh:
                await self._client.initialize()  # the first read of the slot table
                self._fresh = True
            elif refresh:
                await refresh_slots(self._client)
            return node_for_slot(self._client, self._client.keyslot(channel))

    async def _place(self, sub: _Sub, node: Any) -> None:
        """Move ``sub`` to ``node``'s hub (from wherever it was); call with the lock held."""
        listener, channel = sub
        patterns = self._subs[sub]
        old = self._where.pop(sub, None)
        if old is not None:
            await self._nodes[old].remove(listener, channel, patterns)
        hub = self._nodes.get(node.name)
        if hub is None or hub.closing:
            hub = self._nodes[node.name] = Hub(
                node_url(self.url, node.host, node.port),
                timeout=self.timeout,
                ping_interval=self.ping_interval,
                on_lost=lambda _channel: self._kick(),
            )
        self._where[sub] = node.name
        await hub.add(listener, channel, patterns)
        if old is not None and old != node.name:
            log.info("watcher of %s moved from node %s to %s", channel, old, node.name)
            await self._close_idle(old)

    async def _close_idle(self, name: str) -> None:
        if name in self._where.values():
            return
        hub = self._nodes.pop(name, None)
        if hub is not None:
            await hub.aclose()

    def _kick(self) -> None:
        """Re-read the slot table and move what needs moving (called by node hubs)."""
        if self._closing:
            return
        self._wake.set()
        if self._router is None or self._router.done():
            loop = asyncio.get_running_loop()
            self._router = loop.create_task(self._route_loop(), name="kvconf-cluster-hub")

    async def _route_loop(self) -> None:
        backoff, stale_tries = Backoff(), 0
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                async with self._lock:
                    waiting = await self._reroute(final=stale_tries >= _STALE_TABLE_TRIES)
            except _TOPOLOGY_FAILURES as exc:
                if backoff.attempt == 0:
                    log.warning(
                        "cannot read the slot table of %s: %s", safe_url(self.url or ""), exc
                    )
                await asyncio.sleep(backoff.down())
                self._wake.set()
                continue
            backoff.reset()
            stale_tries = stale_tries + 1 if waiting else 0
            if waiting:
                await asyncio.sleep(_STALE_TABLE_DELAY)
                self._wake.set()

    async def _reroute(self, *, final: bool) -> bool:
        """Put every subscription on its slot's owner; True to wait for a fresher table.

        A channel the node dropped while the table still names that node is
        left for a later pass (unless ``final``): resubscribing there would
        be redirected.
        """
        refreshed, waiting = False, False
        for sub in list(self._subs):
            channel = sub[1]
            if not refreshed:
                await self._owner(channel, refresh=True)
                refreshed = True
            node = await self._owner(channel)
            where = self._where.get(sub)
            dropped = where is not None and self._nodes[where].is_dropped(channel)
            if where == node.name and dropped and not final:
                waiting = True
            elif where != node.name or dropped:
                await self._place(sub, node)
        return waiting
