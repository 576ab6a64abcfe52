"""Background services of ``kvconf serve``: embedded persistence, scheduled snapshots.

The API's lifespan enters :func:`background_services` once. With the
embedded store it flushes dirty tenants to the data dir's journal every
0.2 s (or, with ``fsync_writes``, leaves each write to flush before it is
acknowledged), watches keyspace notifications so writes made by any client
of the embedded server are persisted too, and records the server's URL in
the data dir's lock so the CLI can say who holds it. In every mode it saves
a snapshot every ``snapshot_every`` seconds into ``<data_dir>/snapshots``
and keeps the newest ``snapshot_keep``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakeredis

from .. import _jobs
from .._redis.names import keyspace_channel
from .._tasks import stop_task
from ..config import Settings
from ..snapshot import default_dir, prune, save
from ..store import Store
from .embedded import Persister, persister_of

__all__ = ["FLUSH_INTERVAL", "background_services"]

log = logging.getLogger("kvconf.background")

#: Seconds between journal flushes of the embedded store.
FLUSH_INTERVAL = 0.2


async def _flush_loop(persister: Persister) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL)
        try:
            await persister.flush()
        except Exception:
            log.exception("could not persist the embedded store; retrying")


async def _keyspace_loop(persister: Persister) -> None:
    client = fakeredis.FakeAsyncRedis(server=persister.server)
    pubsub = client.pubsub()
    prefix = keyspace_channel("")  # the embedded server: database 0
    try:
        await pubsub.psubscribe(f"{prefix}kvconf:*")
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is None:
                continue
            channel = msg["channel"]
            key = channel.decode() if isinstance(channel, bytes) else str(channel)
            if persister.note_notified(key.removeprefix(prefix)):
                persister.marked += 1
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()


async def _snapshot_loop(store: Store, settings: Settings) -> None:
    directory = default_dir(store)
    while True:
        await asyncio.sleep(settings.snapshot_every)
        try:
            info = await save(store, directory, label="scheduled")
            removed = prune(directory, settings.snapshot_keep)
            log.info("scheduled snapshot %s (%d keys); pruned %d", info.path, info.keys,
                     len(removed))  # fmt: skip
        except Exception:
            _jobs.record("snapshot", False)
            log.exception("scheduled snapshot failed")
        else:
            _jobs.record("snapshot", True)


@asynccontextmanager
async def background_services(store: Store, settings: Settings) -> AsyncIterator[None]:
    """Run the server's background services for as long as the context is open."""
    persister = persister_of(store)
    tasks: list[asyncio.Task[None]] = []
    if persister is not None:
        persister.sync = settings.fsync_writes
        host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
        persister.lock.describe(mode="serve", url=f"http://{host}:{settings.port}")
        tasks.append(asyncio.create_task(_flush_loop(persister)))
        tasks.append(asyncio.create_task(_keyspace_loop(persister)))
    if settings.snapshot_every > 0:
        tasks.append(asyncio.create_task(_snapshot_loop(store, settings)))
    try:
        yield
    finally:
        # Cancelled until each ends: redis-py may swallow a cancellation that
        # lands inside a command, and one cancel then never ends a loop (the
        # server's shutdown used to stall on it).
        for task in tasks:
            await stop_task(task)
        if settings.snapshot_every > 0:  # a save cancelled before its prune
            prune(default_dir(store), settings.snapshot_keep)
        if persister is not None:
            persister.sync = True
            persister.lock.describe(mode="cli")
            await persister.flush()
