"""Which shared hub serves a watcher: one per event loop and Redis URL.

The one module that knows both kinds of hub: a Cluster URL gets a
:class:`~kvconf._watch.cluster.ClusterHub` (one node hub per primary), any
other URL a plain :class:`~kvconf._watch.hub.Hub`. Neither hub module imports
the other or this one.
"""

from __future__ import annotations

import asyncio

from .._redis.connect import is_cluster_url
from .cluster import ClusterHub
from .hub import Hub, SharedHub

__all__ = ["acquire", "release"]

_hubs: dict[tuple[asyncio.AbstractEventLoop, str | None], SharedHub] = {}


def acquire(url: str | None, *, timeout: float, ping_interval: float) -> SharedHub:
    """The hub of this event loop for ``url`` (created on first use); hold one reference."""
    key = (asyncio.get_running_loop(), url)
    hub = _hubs.get(key)
    if hub is None or hub.closing:
        if url is not None and is_cluster_url(url):
            hub = ClusterHub(url, timeout=timeout, ping_interval=ping_interval)
        else:
            hub = Hub(url, timeout=timeout, ping_interval=ping_interval)
        _hubs[key] = hub
    hub.refs += 1
    return hub


async def release(hub: SharedHub) -> None:
    """Drop one reference; the last one closes the hub."""
    hub.refs -= 1
    if hub.refs > 0:
        return
    for key, found in list(_hubs.items()):
        if found is hub:
            del _hubs[key]
    await hub.aclose()
