"""Which shared objects serve a watcher: its hub and its tenant monitor.

Hubs: one per event loop and Redis URL. This is the one module that knows
both kinds: a Cluster URL gets a :class:`~kvconf._watch.cluster.ClusterHub`
(one node hub per primary), any other URL a plain
:class:`~kvconf._watch.hub.Hub`. Neither hub module imports the other or
this one.

Monitors: one :class:`~kvconf._watch.monitor.TenantMonitor` per event loop,
URL, tenant and timing, so a process's watchers of one tenant make one
revision check and one fleet report between them.
"""

from __future__ import annotations

import asyncio

from .._redis.connect import is_cluster_url
from .._redis.names import TenantKeys
from .cluster import ClusterHub
from .hub import Hub, SharedHub
from .monitor import TenantMonitor

__all__ = ["acquire", "acquire_monitor", "release", "release_monitor"]

_hubs: dict[tuple[asyncio.AbstractEventLoop, str | None], SharedHub] = {}
_MonitorKey = tuple[asyncio.AbstractEventLoop, str | None, str, float, float, float]
_monitors: dict[_MonitorKey, TenantMonitor] = {}


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


def acquire_monitor(
    url: str | None,
    tenant_keys: TenantKeys,
    *,
    interval: float,
    timeout: float,
    fleet_interval: float,
) -> TenantMonitor:
    """The monitor of this loop for ``tenant_keys``' tenant at ``url`` with this timing."""
    loop = asyncio.get_running_loop()
    key = (loop, url, tenant_keys.tenant, interval, timeout, fleet_interval)
    monitor = _monitors.get(key)
    if monitor is None or monitor.closing:
        monitor = TenantMonitor(
            url, tenant_keys, interval=interval, timeout=timeout, fleet_interval=fleet_interval
        )
        _monitors[key] = monitor
    monitor.refs += 1
    return monitor


async def release_monitor(monitor: TenantMonitor) -> None:
    """Drop one reference; the last one closes the monitor."""
    monitor.refs -= 1
    if monitor.refs > 0:
        return
    for key, found in list(_monitors.items()):
        if found is monitor:
            del _monitors[key]
    await monitor.aclose()
