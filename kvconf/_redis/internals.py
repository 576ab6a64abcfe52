"""The one shim over redis-py's internals (pinned by tests/test_shape.py).

kvconf reaches past redis-py's public API in a few places, each for a
measured reason (see docs/design.md): the stream pair of a connection (the
watchers' pub/sub session reads the socket itself; writes leave without a
task hop), a pool's connection options (snapshots open dedicated RESP2
connections) and a Cluster client's slot table (watchers route channels to
primaries). Every such access is a function here, so a redis-py upgrade that
moves one breaks one file, and each function degrades to ``None`` where the
attribute has gone so callers can fall back to the public API.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = [
    "connection_options",
    "database_of",
    "detach_streams",
    "node_for_slot",
    "refresh_slots",
    "stream_pair",
    "stream_writer",
]


def stream_pair(conn: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """The asyncio stream pair of a connected redis-py connection, or None."""
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if isinstance(reader, asyncio.StreamReader) and isinstance(writer, asyncio.StreamWriter):
        return reader, writer
    return None


def stream_writer(conn: Any) -> asyncio.StreamWriter | None:
    """The stream writer of a redis-py connection, or None (not connected, or moved)."""
    writer = getattr(conn, "_writer", None)
    return writer if isinstance(writer, asyncio.StreamWriter) else None


def detach_streams(conn: Any) -> None:
    """Make ``conn`` forget its streams: it neither closes the socket nor warns when collected."""
    conn._writer = conn._reader = None


def connection_options(client: Any) -> dict[str, Any] | None:
    """The keyword arguments a client's pool opens connections with (None: no such pool)."""
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", None)
    return dict(options) if isinstance(options, dict) else None


def database_of(client: Any) -> int:
    """The database number a standalone client talks to (0 when unknown)."""
    return int((connection_options(client) or {}).get("db", 0) or 0)


def node_for_slot(cluster: Any, slot: int) -> Any:
    """The primary ``ClusterNode`` that owns ``slot`` in an asyncio Cluster client."""
    return cluster.nodes_manager.get_node_from_slot(slot)


async def refresh_slots(cluster: Any) -> None:
    """Re-read a Cluster client's slot table (after a MOVED)."""
    await cluster.nodes_manager.initialize()
