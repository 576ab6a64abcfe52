"""Opening Redis clients: a URL, a Cluster URL, or the embedded default."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster
from redis.maint_notifications import MaintNotificationsConfig

__all__ = ["connect", "embedded_server", "enable_keyspace_events", "is_cluster_url"]

_lock = threading.Lock()
_servers: dict[str, fakeredis.FakeServer] = {}


def embedded_server(name: str = "default") -> fakeredis.FakeServer:
    """The process-wide in-memory server behind the embedded default.

    Every Store and Watcher opened without a URL in one process shares it, so
    a watcher sees the writes of a store in the same process.
    """
    with _lock:
        server = _servers.get(name)
        if server is None:
            server = _servers[name] = fakeredis.FakeServer()
        return server


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` URLs or ``?cluster=true``."""
    parts = urlsplit(url)
    flag = parse_qs(parts.query).get("cluster", [""])[0].lower()
    return parts.scheme in ("redis+cluster", "rediss+cluster") or flag in ("1", "true", "yes")


def connect(url: str | None, **options: Any) -> Any:
    """An asyncio Redis client for ``url`` (None: the embedded default).

    ``redis+cluster://host:port`` (or ``?cluster=true``) opens a Cluster
    client; ``memory://NAME`` opens a named embedded server.
    """
    if url is None or url.startswith("memory://"):
        name = "default" if url is None else (url.removeprefix("memory://") or "default")
        return fakeredis.FakeAsyncRedis(server=embedded_server(name), **options)
    # redis-py 8.1 turns maintenance notifications (a Redis Enterprise/Cloud
    # feature) on by default over RESP3, and then its pool lends connections
    # the server has closed (redis-py #4252): after a restart, the next
    # command on each pooled connection failed. kvconf does not use them.
    options.setdefault("maint_notifications_config", MaintNotificationsConfig(enabled=False))
    if is_cluster_url(url):
        parts = urlsplit(url)
        scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
        query = "&".join(f"{k}={v[0]}" for k, v in parse_qs(parts.query).items() if k != "cluster")
        plain = f"{scheme}://{parts.netloc}{parts.path}" + (f"?{query}" if query else "")
        return RedisCluster.from_url(plain, **options)
    return aredis.Redis.from_url(url, **options)


async def enable_keyspace_events(client: Any) -> None:
    """Turn on the keyspace notifications watchers use (``K``, ``h``, ``g``).

    Flags already set are kept. On a Cluster every primary has its own
    setting and emits its own notifications: each known primary is set.
    """
    targets: list[Any] = [None]
    if isinstance(client, RedisCluster):
        await client.initialize()
        targets = client.get_primaries()
    for node in targets:
        on = {} if node is None else {"target_nodes": node}
        reply = await client.config_get("notify-keyspace-events", **on)
        current = next(iter(dict(reply).values()), "")
        flags = set(current.decode() if isinstance(current, bytes) else str(current))
        if not ({"K", "h", "g"} <= flags or {"K", "A"} <= flags):
            wanted = "".join(sorted(flags | {"K", "h", "g"}))
            await client.config_set("notify-keyspace-events", wanted, **on)
