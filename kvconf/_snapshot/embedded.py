"""The embedded default: fakeredis in-process, made durable in the data dir.

Layout of ``data_dir``::

    LOCK                   held (flock) by the one process that owns the dir
    state.kvsnap           base snapshot (generation G, every tenant, soft-deleted too)
    journal-<G>.log        records appended since the base: deltas or whole tenants
    snapshots/             user, scheduled and safety snapshots

A write of kvconf's write script marks the keys it changed; any other write
command marks its whole tenant dirty. A flush reads, per tenant and in one
transaction (one revision), either the changed keys with the log since the
last record (a delta; captured whole instead when that log names a key the
delta lacks, i.e. a write landed during the flush) or the whole tenant,
appends the records to the journal and fsyncs once. An append that fails
midway is cut off, so later records never follow a partial one.
``kvconf serve`` flushes every 0.2 s (so an acknowledged write is on disk
within ~0.2 s plus the flush time, documented as at most one second);
with ``fsync_writes`` and in the CLI, a write is flushed before it returns.
When the journal outgrows the base it is compacted into a new base snapshot.
At start the base is loaded and the journal replayed; a torn last record (a
crash while appending) is dropped, which only loses writes that were never
acknowledged as durable; a damaged record before whole ones refuses the start
(``JournalCorrupt``, see ``kvconf snapshot recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import msgspec

from .. import _codec
from .._codec import as_text
from .._redis.connect import _servers, embedded_server
from .._redis.names import PREFIX, TENANTS_KEY, TenantKeys, tenant_from_key
from .._redis.scripts import script_source
from .._tasks import to_the_end
from ..config import Settings
from ..exceptions import JournalCorrupt, Unavailable
from ..snapshot import load_dump, write_snapshot
from ..store import Store
from .capture import capture
from .format import SnapshotReader, fsync_dir, remove_stale_temporaries
from .journal import (
    GlobalKey,
    JournalRecord,
    JournalScan,
    JournalWriter,
    KeyDelta,
    TenantDelta,
    journal_generations,
    journal_path,
    scan_journal,
)
from .restore import on_restored

__all__ = [
    "JournalRecovery",
    "close_embedded",
    "open_embedded_store",
    "persister_of",
    "serving_url",
]

log = logging.getLogger("kvconf.embedded")

BASE_NAME = "state.kvsnap"
LOCK_NAME = "LOCK"
_COMPACT_MIN = 16 << 20
_READ_SCRIPTS = frozenset(
    hashlib.sha1(script_source(n, shebang=False).encode(), usedforsecurity=False).hexdigest()
    for n in ("read_state", "read_log", "read_schemas", "snapshot_read")
)
_READ_ONLY_COMMANDS = (
    "GET MGET HGET HMGET HGETALL HKEYS HVALS HLEN HEXISTS HSCAN SMEMBERS SISMEMBER "
    "SMISMEMBER SCARD SSCAN ZRANGE ZREVRANGE ZRANGEBYSCORE ZREVRANGEBYSCORE ZRANGEBYLEX "
    "ZREVRANGEBYLEX ZLEXCOUNT ZCARD ZSCORE "
    "ZSCAN ZCOUNT ZRANK EXISTS TYPE TTL PTTL SCAN KEYS PING INFO SCRIPT EVALSHA_RO EVAL_RO "
    "FCALL_RO PUBLISH SPUBLISH SUBSCRIBE SSUBSCRIBE PSUBSCRIBE CLIENT HELLO SELECT DBSIZE "
    "TIME ECHO CONFIG COMMAND STRLEN LRANGE LLEN MEMORY OBJECT DUMP"
)
_READ_ONLY = frozenset(_READ_ONLY_COMMANDS.split())
#: kvconf's write script: its change set names every key it changes (journaled as deltas).
_WRITE_SCRIPT = hashlib.sha1(
    script_source("write", shebang=False).encode(), usedforsecurity=False
).hexdigest()  # as the in-process client registers it (no shebang line)
#: Seconds a keyspace notification of a key a tracked write named is taken as that write's.
_EXPLAINED_FOR = 2.0
_MULTI_KEY = frozenset({"DEL", "UNLINK", "TOUCH"})


class _DirLock:
    """An exclusive flock on ``data_dir/LOCK``; the OS drops it when the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 3.0
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self._holder()
                if holder.get("mode") != "cli" or time.monotonic() > deadline:
                    os.close(self._fd)
                    raise _locked(data_dir, holder) from None
                time.sleep(0.05)
        self.describe(mode="cli")

    def _holder(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def describe(self, **info: Any) -> None:
        """Record who holds the lock (shown to processes that are refused)."""
        data = json.dumps({"pid": os.getpid(), **info}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        """Give the data dir up."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


def _locked(data_dir: Path, holder: dict[str, Any]) -> Unavailable:
    pid = holder.get("pid", "?")
    if holder.get("mode") == "serve":
        url = holder.get("url", "")
        message = (
            f"data dir {data_dir} is in use by `kvconf serve` (pid {pid}) at {url}: use its "
            "REST API, stop it first, or share a Redis server via KVCONF_REDIS_URL"
        )
    else:
        message = f"data dir {data_dir} is in use by another kvconf process (pid {pid})"
    return Unavailable(message, reason="data_dir_locked", data_dir=str(data_dir), holder=holder)


def serving_url(data_dir: Path) -> str | None:
    """The URL of the ``kvconf serve`` in another process that owns ``data_dir``, or None.

    Read from the lock file without taking the lock (the CLI then goes through
    that server instead of being refused). A holder whose process is gone, or
    one in this process, does not count; a server listening on every address
    is reached on loopback.
    """
    path = _resolve(data_dir)
    if path in _open:
        return None
    try:
        found = json.loads((path / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return None
    if not isinstance(found, dict) or found.get("mode") != "serve" or not found.get("url"):
        return None
    pid = found.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    url = str(found["url"])
    return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:")


class JournalRecovery(msgspec.Struct, frozen=True):
    """A damaged journal set aside at start: where, what was kept and what was lost."""

    path: str
    kept_as: str
    offset: int
    intact: int
    lost: int
    tenants: list[str]


class Persister:
    """Keeps one embedded server durable in its data dir (see the module docstring)."""

    def __init__(self, data_dir: Path, server: Any, settings: Settings, lock: _DirLock) -> None:
        self.data_dir = data_dir
        self.server = server
        self.settings = settings
        self.lock = lock
        #: True: every write is flushed before it returns (CLI, ``fsync_writes``).
        self.sync = True
        #: Tenants to capture whole at the next flush.
        self.dirty_tenants: set[str] = set()
        self.dirty_globals: set[str] = set()
        #: Per tenant, the (namespace, key) pairs the write script changed since its last record.
        self.dirty_keys: dict[str, set[tuple[str, str]]] = {}
        #: Per tenant, the revision of its last record (base, full or delta).
        self.synced: dict[str, int] = {}
        #: Journals set aside by ``load(recover=True)``.
        self.recovered: list[JournalRecovery] = []
        #: Redis keys tracked writes named lately: their keyspace notifications are explained.
        self._named: dict[str, float] = {}
        self.marked = 0
        self.durable = 0
        self.generation = 0
        self.journal: JournalWriter | None = None
        self.compact_at = _COMPACT_MIN
        self._loop: asyncio.AbstractEventLoop | None = None
        self._mutex = asyncio.Lock()
        self._client: Any = None
        self._store: Store | None = None

    # -- dirty tracking --------------------------------------------------------

    def note_key(self, key: str) -> bool:
        """Mark what ``key`` belongs to as dirty; True if it is kvconf's."""
        tenant = tenant_from_key(key)
        if tenant is not None:
            if key.endswith("}:fleet"):
                return False  # watcher presence: not state, never persisted
            self.dirty_tenants.add(tenant)
            self.dirty_keys.pop(tenant, None)  # the whole capture covers them
            return True
        if key.startswith(f"{PREFIX}:") and key != TENANTS_KEY:
            self.dirty_globals.add(key)
            return True
        return False

    def note(self, args: Sequence[Any]) -> bool:
        """Mark what a command writes (nothing for reads); True if it writes kvconf's keys.

        The write script is marked key by key (its change set names every key
        it changes); any other write marks its tenant to be captured whole.
        """
        if not args:
            return False
        name = as_text(args[0]).upper()
        if name in ("EVALSHA", "EVAL"):
            sha = as_text(args[1])
            if name == "EVALSHA" and sha in _READ_SCRIPTS:
                return False
            count = int(args[2])
            if name == "EVALSHA" and sha == _WRITE_SCRIPT and count:
                return self._note_write(args[3 : 3 + count], args[3 + count :])
            keys = args[3 : 3 + count]
        elif name in _READ_ONLY:
            return False
        elif name in _MULTI_KEY:
            keys = args[1:]
        else:
            keys = args[1:2]
        marked = False
        for key in keys:
            if isinstance(key, bytes | str):
                marked = self.note_key(as_text(key)) or marked
        return marked

    def _note_write(self, keys: Sequence[Any], argv: Sequence[Any]) -> bool:
        """Mark the keys of one call of the write script (see ``write.lua`` for its ARGV)."""
        tenant = tenant_from_key(as_text(keys[0]))
        if tenant is None or len(argv) < 7:
            return False
        tk = TenantKeys(tenant)
        multi = as_text(argv[1]) == "*"
        pairs = set()
        for label in argv[7::3]:
            text = as_text(label)
            ns, _, key = text.partition("/") if multi else (as_text(argv[1]), "", text)
            pairs.add((ns, key))
        now = time.monotonic()
        for named in (tk.rev, tk.epoch, tk.log, tk.meta, tk.namespaces):
            self._named[named] = now
        for ns, _ in pairs:
            self._named[tk.ns(ns)] = self._named[tk.hist(ns)] = now
        if tenant not in self.dirty_tenants:
            self.dirty_keys.setdefault(tenant, set()).update(pairs)
        return True

    def note_notified(self, key: str) -> bool:
        """Mark a key a keyspace notification named, unless a tracked write named it lately.

        Writes through the store's own client are marked before they run;
        their notifications arrive after, and must not turn a delta into a
        whole-tenant capture. Any other writer's are marked whole.
        """
        if self._named.get(key, 0.0) > time.monotonic() - _EXPLAINED_FOR:
            return False
        return self.note_key(key)

    # -- event-loop bound resources -------------------------------------------

    def _bind(self) -> Store:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._store is None:
            self._loop = loop
            self._mutex = asyncio.Lock()
            self._client = fakeredis.FakeAsyncRedis(server=self.server)
            self._store = Store(settings=self.settings, client=self._client)
        return self._store

    async def aclose(self) -> None:
        """Flush, then close the journal and the capture client and release the dir."""
        try:
            await self.flush()
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = self._store = None
            if self.journal is not None:
                self.journal.close()
                self.journal = None
            self.lock.release()

    # -- flushing --------------------------------------------------------------

    async def flush(self) -> None:
        """Make every write marked so far durable (one fsync for the batch)."""
        store = self._bind()
        async with self._mutex:
            upto = self.marked
            tenants, globals_, keys = self.dirty_tenants, self.dirty_globals, self.dirty_keys
            if not tenants and not globals_ and not keys:
                self.durable = max(self.durable, upto)
                return
            self.dirty_tenants, self.dirty_globals, self.dirty_keys = set(), set(), {}
            try:
                assert self.journal is not None
                if self.journal.closed:  # a failed append could not be cut off: start anew
                    await self._compact(store)
                synced: dict[str, int | None] = {}
                records = [await self._tenant_record(store, t, synced) for t in sorted(tenants)]
                for tenant in sorted(keys.keys() - tenants):
                    records.append(await self._delta_record(store, tenant, keys[tenant], synced))
                records += [await self._global_record(k) for k in sorted(globals_)]
                assert self.journal is not None
                await to_the_end(asyncio.to_thread(self.journal.append, records))
            except BaseException:
                self._mark_again(tenants, globals_, keys)
                raise
            for tenant, revision in synced.items():
                if revision is None:
                    self.synced.pop(tenant, None)
                else:
                    self.synced[tenant] = revision
            self.durable = max(self.durable, upto)
            self._forget_named()
            if self.journal.size > self.compact_at:
                await self._compact(store)

    def _mark_again(
        self, tenants: set[str], globals_: set[str], keys: dict[str, set[tuple[str, str]]]
    ) -> None:
        """A failed flush: what it took is dirty again (retried by the next flush)."""
        self.dirty_tenants |= tenants
        self.dirty_globals |= globals_
        for tenant, pairs in keys.items():
            if tenant not in self.dirty_tenants:
                self.dirty_keys.setdefault(tenant, set()).update(pairs)

    def _forget_named(self) -> None:
        horizon = time.monotonic() - _EXPLAINED_FOR
        if len(self._named) > 1024:
            self._named = {k: at for k, at in self._named.items() if at > horizon}

    async def flush_through(self, seq: int) -> None:
        """Return once the write numbered ``seq`` is durable (group commit)."""
        while self.durable < seq:
            await self.flush()

    async def _tenant_record(
        self, store: Store, tenant: str, synced: dict[str, int | None]
    ) -> JournalRecord:
        dump = await capture(store.redis, tenant)
        synced[tenant] = None if dump is None else dump.revision
        return JournalRecord(tenant=tenant, dump=dump)

    async def _delta_record(
        self,
        store: Store,
        tenant: str,
        pairs: set[tuple[str, str]],
        synced: dict[str, int | None],
    ) -> JournalRecord:
        """The keys the write script changed, read in one transaction (one revision).

        A tenant with no record since the start (or gone meanwhile) is captured whole.
        """
        since = self.synced.get(tenant)
        if since is None:
            return await self._tenant_record(store, tenant, synced)
        tk = TenantKeys(tenant)
        ordered = sorted(pairs)
        pipe = self._client.pipeline(transaction=True)
        pipe.get(tk.rev)
        pipe.get(tk.epoch)
        pipe.hgetall(tk.meta)
        pipe.smembers(tk.namespaces)
        pipe.zrangebyscore(tk.log, f"({since}", "+inf", withscores=True)
        pipe.zrange(tk.log, 0, 0, withscores=True)
        for ns, key in ordered:
            pipe.hget(tk.ns(ns), key)
            pipe.zrangebylex(tk.hist(ns), *_versions_of(key))
        replies = await pipe.execute()
        rev_raw, epoch, meta, names, log, first = replies[:6]
        if rev_raw is None or not meta or not _explains(log, pairs):
            # A write that landed after the dirty keys were taken is in the log
            # read here but not in those keys: capture the tenant whole instead.
            return await self._tenant_record(store, tenant, synced)
        changed = [
            KeyDelta(namespace=ns, key=key, record=record, history=list(history))
            for (ns, key), record, history in zip(
                ordered, replies[6::2], replies[7::2], strict=True
            )
        ]
        delta = TenantDelta(
            tenant=tenant,
            revision=int(rev_raw),
            epoch=as_text(epoch) if epoch is not None else "",
            meta={as_text(k): as_text(v) for k, v in meta.items()},
            namespaces=sorted(as_text(n) for n in names),
            keys=changed,
            log=[x for member, score in log for x in (int(score), member)],
            log_from=int(first[0][1]) if first else 0,
        )
        synced[tenant] = delta.revision
        return JournalRecord(tenant=tenant, delta=delta)

    async def _global_record(self, key: str) -> JournalRecord:
        client = self._client
        kind = as_text(await client.type(key))
        data: list[bytes] = []
        if kind == "hash":
            for k, v in (await client.hgetall(key)).items():
                data.extend((k, v))
        elif kind == "set":
            data = sorted(await client.smembers(key))
        elif kind == "string":
            data = [await client.get(key)]
        elif kind == "zset":
            for m, s in await client.zrange(key, 0, -1, withscores=True):
                data.extend((repr(s).encode(), m))
        elif kind == "list":
            data = await client.lrange(key, 0, -1)
        return JournalRecord(tenant="", key=GlobalKey(key=key, kind=kind, data=data))

    # -- base snapshot and compaction -----------------------------------------

    async def _compact(self, store: Store) -> None:
        """New base snapshot; the journal restarts (caller holds the mutex)."""
        gen = self.generation + 1
        globals_ = []
        async for raw in store.redis.scan_iter(match=f"{PREFIX}:*", count=1000):
            key = as_text(raw)
            if tenant_from_key(key) is None and key != TENANTS_KEY:
                globals_.append(await self._global_record(key))
        journal = JournalWriter(journal_path(self.data_dir, gen))
        await asyncio.to_thread(journal.append, globals_)
        await write_snapshot(
            store, self.data_dir / BASE_NAME, None, label="base", generation=gen,
            include_deleted=True,
        )  # fmt: skip
        old, self.journal, self.generation = self.journal, journal, gen
        if old is not None:
            old.close()
        for g in journal_generations(self.data_dir):
            if g < gen:
                journal_path(self.data_dir, g).unlink(missing_ok=True)
        size = (self.data_dir / BASE_NAME).stat().st_size
        self.compact_at = max(_COMPACT_MIN, 2 * size)

    async def load(self, *, recover: bool = False) -> None:
        """Fill the (empty) server from the base snapshot and the journal.

        A damaged journal (not a torn tail) raises :class:`JournalCorrupt`;
        with ``recover`` it is renamed ``<name>.damaged-<UTC time>``, the
        intact records before the damage are loaded, what was lost is logged
        and recorded in :attr:`recovered`, and a new base is written.
        """
        store = self._bind()
        for directory in (self.data_dir, self.data_dir / "snapshots"):
            if directory.is_dir():  # temporaries of saves killed before they finished
                remove_stale_temporaries(directory)
        base = self.data_dir / BASE_NAME
        if base.exists():
            with SnapshotReader(base) as reader:
                self.generation = reader.footer.generation
                for dump in reader.dumps():
                    await load_dump(store, dump)
                    self.synced[dump.tenant] = dump.revision
        gens = journal_generations(self.data_dir)
        for g in gens:
            if g < self.generation:
                journal_path(self.data_dir, g).unlink(missing_ok=True)
        live = [g for g in gens if g >= self.generation]
        valid, intact = 0, True
        for g in live:
            scan = self._scan(journal_path(self.data_dir, g), recover)
            intact = intact and scan.damaged_at is None
            valid = scan.valid
            for record in scan.records:
                await self._apply(store, record)
        if base.exists() and live == [self.generation] and intact:
            path = journal_path(self.data_dir, self.generation)
            self.journal = JournalWriter(path, valid_length=valid)
            self.compact_at = max(_COMPACT_MIN, 2 * base.stat().st_size)
        else:  # also after a recovery: the intact state becomes the new base
            async with self._mutex:
                await self._compact(store)

    def _scan(self, path: Path, recover: bool) -> JournalScan:
        """A journal's records; damage refuses the start, or with ``recover`` is set aside."""
        scan = scan_journal(path)
        if scan.damaged_at is None:
            return scan
        tenants = sorted({r.tenant or (r.key.key if r.key else "") for r in scan.lost})
        if not recover:
            raise JournalCorrupt(
                f"journal {path} is damaged at byte {scan.damaged_at}, before "
                f"{len(scan.lost)} whole record(s) (tenants: {', '.join(tenants)}); refusing to "
                "start without them. `kvconf snapshot recover` keeps the file aside and starts "
                "from the intact part",
                path=str(path), offset=scan.damaged_at, lost=len(scan.lost), tenants=tenants,
            )  # fmt: skip
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        path.rename(aside)
        fsync_dir(path.parent)
        log.warning(
            "journal %s is damaged at byte %d: kept aside as %s; started from the %d intact "
            "record(s); lost %d later record(s) of tenant(s) %s",
            path, scan.damaged_at, aside.name, len(scan.records), len(scan.lost),
            ", ".join(tenants),
        )  # fmt: skip
        self.recovered.append(
            JournalRecovery(
                path=str(path), kept_as=str(aside), offset=scan.damaged_at,
                intact=len(scan.records), lost=len(scan.lost), tenants=tenants,
            )
        )  # fmt: skip
        return scan

    async def _apply(self, store: Store, record: JournalRecord) -> None:
        client = store.redis
        if record.key is not None:
            g = record.key
            await client.delete(g.key)
            if g.kind == "hash" and g.data:
                await client.hset(g.key, mapping=dict(zip(g.data[::2], g.data[1::2], strict=True)))
            elif g.kind == "set" and g.data:
                await client.sadd(g.key, *g.data)
            elif g.kind == "string" and g.data:
                await client.set(g.key, g.data[0])
            elif g.kind == "zset" and g.data:
                scores = {m: float(s) for s, m in zip(g.data[::2], g.data[1::2], strict=True)}
                await client.zadd(g.key, scores)
            elif g.kind == "list" and g.data:
                await client.rpush(g.key, *g.data)
            return
        if record.delta is not None:
            await self._apply_delta(client, record.delta)
            return
        tenant, dump = record.tenant, record.dump
        if dump is None:
            self.synced.pop(tenant, None)
            names = [k async for k in client.scan_iter(match=f"{PREFIX}:{{{tenant}}}:*")]
            if names:
                await client.unlink(*names)
            await client.srem(TENANTS_KEY, tenant)
            return
        # replaces the live tenant: every key of it is named from its namespace set
        await load_dump(store, dump)
        self.synced[tenant] = dump.revision
        if "deleted_at" in dump.meta or "created_at" not in dump.meta:
            await client.srem(TENANTS_KEY, tenant)

    async def _apply_delta(self, client: Any, delta: TenantDelta) -> None:
        """Write a delta over the tenant as the previous records left it."""
        tk = TenantKeys(delta.tenant)
        await client.set(tk.rev, delta.revision)
        if delta.epoch:
            await client.set(tk.epoch, delta.epoch)
        await client.delete(tk.meta, tk.namespaces)
        await client.hset(tk.meta, mapping=delta.meta)
        if delta.namespaces:
            await client.sadd(tk.namespaces, *delta.namespaces)
        for k in delta.keys:
            if k.record is None:
                await client.hdel(tk.ns(k.namespace), k.key)
            else:
                await client.hset(tk.ns(k.namespace), k.key, k.record)
            hist = tk.hist(k.namespace)
            await client.zremrangebylex(hist, *_versions_of(k.key))
            if k.history:
                await client.zadd(hist, dict.fromkeys(k.history, 0))
        pairs = iter(delta.log)
        scores = {member: float(rev) for rev, member in zip(pairs, pairs, strict=True)}
        if scores:
            await client.zadd(tk.log, scores)
        if delta.log_from:
            await client.zremrangebyscore(tk.log, "-inf", f"({delta.log_from}")
        else:
            await client.delete(tk.log)
        if "deleted_at" in delta.meta or "created_at" not in delta.meta:
            await client.srem(TENANTS_KEY, delta.tenant)
        else:
            await client.sadd(TENANTS_KEY, delta.tenant)
        self.synced[delta.tenant] = delta.revision


def _versions_of(key: str) -> tuple[bytes, bytes]:
    """The lexicographic range of a key's members in its namespace's history zset."""
    head = b"[" + key.encode() + b"|"
    return head, head + b"\xff"


class _TrackedRedis(fakeredis.FakeAsyncRedis):
    """The embedded client: marks written tenants dirty, flushes before acking if sync."""

    def __init__(self, *args: Any, persister: Persister, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kvconf_persister = persister

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        persister = self.kvconf_persister
        # marked before it runs too: a flush meanwhile reads its keys with its revision
        writes = persister.note(args)
        result = await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        if not writes:
            return result
        persister.note(args)  # and after: the next flush reads what it wrote
        persister.marked += 1
        if persister.sync:
            try:
                await persister.flush_through(persister.marked)
            except OSError as exc:
                raise Unavailable(
                    f"the write is applied but could not be made durable in "
                    f"{persister.data_dir}: {exc.strerror or exc}",
                    reason="not_durable",
                ) from exc
        return result

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await self.kvconf_persister.flush()
        finally:
            await super().aclose(close_connection_pool)


_open: dict[Path, Persister] = {}


def _resolve(path: Path) -> Path:
    return path.expanduser().resolve()


def _server_name(path: Path) -> str:
    claimed = {p.server for p in _open.values()}
    default = embedded_server("default")
    return "default" if default not in claimed else f"data:{path}"


async def open_embedded_store(
    settings: Settings, *, server_name: str | None = None, recover_journal: bool = False
) -> Store:
    """A Store on the embedded server, loaded from and persisted to ``settings.data_dir``.

    The first call for a data dir takes its lock (refusing with
    :class:`Unavailable` when another process holds it, naming that process
    and, for ``kvconf serve``, its URL) and loads its state; later calls in
    the process share it. Writes are flushed before they return until
    :func:`kvconf._snapshot.background.background_services` switches to the ~0.2 s
    group flush (unless ``settings.fsync_writes``). A damaged journal raises
    :class:`JournalCorrupt` unless ``recover_journal`` (see :meth:`Persister.load`).
    """
    path = _resolve(settings.data_dir)
    persister = _open.get(path)
    if persister is None:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = _DirLock(path)
        server = embedded_server(server_name or _server_name(path))
        persister = Persister(path, server, settings, lock)
        try:
            await persister.load(recover=recover_journal)
        except BaseException:
            await persister.aclose()
            raise
        _open[path] = persister
    client = _TrackedRedis(server=persister.server, persister=persister)
    return Store(settings=settings, client=client)


def persister_of(store: Store) -> Persister | None:
    """The persister behind an embedded store (None for a Redis-backed one)."""
    client = store.redis
    return client.kvconf_persister if isinstance(client, _TrackedRedis) else None


async def _journal_restored(store: Store, tenants: list[str]) -> None:
    """Persist the tenants a restore wrote before it returns (whole: it went around us)."""
    persister = persister_of(store)
    if persister is not None:
        for tenant in tenants:
            persister.note_key(TenantKeys(tenant).rev)
        await persister.flush()


on_restored(_journal_restored)


async def close_embedded(data_dir: Path, *, drop_server: bool = True) -> None:
    """Flush and release a data dir opened in this process (tests, shutdown)."""
    persister = _open.pop(_resolve(data_dir), None)
    if persister is None:
        return
    await persister.aclose()
    if drop_server:
        for name, server in list(_servers.items()):
            if server is persister.server:
                with contextlib.suppress(KeyError):
                    del _servers[name]


def _explains(log: list[tuple[bytes, float]], pairs: set[tuple[str, str]]) -> bool:
    """True if every logged change after the last record is one of ``pairs``.

    Anything else (a key outside them, a schema, lifecycle or reset event, or
    an event that does not decode) means the delta would miss part of the state.
    """
    for member, _score in log:
        try:
            event = _codec.decode_event(member)
        except Unavailable:
            return False
        if event.type != "change":
            return False
        for change in event.changes:
            if (event.namespace_of(change), change.key) not in pairs:
                return False
    return True
