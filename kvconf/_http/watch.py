"""The watcher's engine over a ``kvconf serve``: the state endpoint, then the SSE stream.

``Watcher(tenant, "https://kvconf.example", token=...)`` holds one of these
instead of the Redis engine (:mod:`kvconf._watch.engine`); the cache, the
callbacks, bindings and the cache file are the same objects. The protocol,
gap-free by the same rules as over Redis:

* list: ``GET /api/v1/tenants/{t}/state`` reads every followed key, the
  schemas, the revision and the epoch at one revision;
* follow: ``GET .../watch`` with ``Last-Event-ID`` = the applied revision
  (and the cache's ``epoch``), so the server replays from its log whatever
  came after; events are applied strictly in revision order (an event at or
  below the applied revision is skipped);
* ``reset``, an event of another epoch, or an event type this client does
  not know: re-list and deliver the net change;
* ``progress`` (changes the stream's namespace filter or the token hides):
  the revision advances, so ``wait_for_revision(R)`` returns for any R;
* the stream's heartbeats come every ``check_interval`` seconds: nothing
  heard for two of them marks the watcher ``stale`` and reconnects, with
  capped exponential backoff and jitter that resets after a healthy
  connection; the last known values are served all along.

The fleet report is the server's: the stream names this watcher
(``X-Kvconf-Watcher``), and the server reports it with the revision the
stream delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from .._redis.names import validate_tenant
from .._tasks import stop_task
from .._watch.backoff import Backoff
from .._watch.cache_file import load_cache_file
from .._watch.delivery import Delivery
from .._watch.state import CacheState
from ..config import Settings, safe_url
from ..exceptions import (
    InvalidInput,
    KvconfError,
    NotFound,
    TenantNotFound,
    Unauthorized,
    Unavailable,
)
from ..models import ChangeEvent, Entry, Schema
from .client import HttpClient, error_from

__all__ = ["MAX_EVENT", "NO_EPOCH", "EventTooLarge", "HttpWatchEngine", "sse_frames"]

log = logging.getLogger("kvconf.watcher")

#: The largest event this client buffers (a change event is one line of JSON); a
#: larger one is skipped by re-reading the state.
MAX_EVENT = 64 * 1024 * 1024
#: The epoch a cache with no tenant resumes in (no tenant has it: the stream starts with a reset).
NO_EPOCH = "-"
#: The longest ``instance_id`` (the server's limit on the fleet identity).
MAX_INSTANCE_ID = 200
#: What a failed list or stream may raise, besides a KvconfError from the server.
_TRANSPORT = (httpx.HTTPError, OSError, TimeoutError, msgspec.DecodeError, msgspec.ValidationError)


class _State(msgspec.Struct):
    """The answer of ``GET .../state``."""

    epoch: str
    revision: int
    namespaces: dict[str, dict[str, Entry]] = {}
    schemas: dict[str, Schema] = {}


class _Progress(msgspec.Struct):
    revision: int


_state_decoder = msgspec.json.Decoder(_State)
_event_decoder = msgspec.json.Decoder(ChangeEvent)
_progress_decoder = msgspec.json.Decoder(_Progress)


class _Relist(Exception):
    """The stream said the cache must be re-read (a ``reset``, another epoch)."""


class EventTooLarge(Exception):
    """An event of the stream is larger than this client buffers."""


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str, str] | None]:
    """The events of an SSE response as ``(event, data)``; None for a comment (heartbeat).

    The server writes one ``data:`` line per event; several are joined with
    newlines as the SSE specification says. ``id`` lines are not needed: an
    event's revision is in its data. An event over :data:`MAX_EVENT` bytes
    raises :class:`EventTooLarge` (the caller re-reads the state instead).
    """
    buffer = bytearray()
    scanned = 0  # the buffer holds no newline before this offset
    name, size = "message", 0
    data: list[str] = []
    async for chunk in response.aiter_bytes():
        buffer += chunk
        while True:
            end = buffer.find(b"\n", scanned)
            if end < 0:
                scanned = len(buffer)
                if size + len(buffer) > MAX_EVENT:
                    raise EventTooLarge(MAX_EVENT)
                break
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            scanned = 0
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield name, "\n".join(data)
                name, data, size = "message", [], 0
            elif line.startswith(b":"):
                yield None
            else:
                field, _, value = line.decode().partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                    size += len(line)
                    if size > MAX_EVENT:
                        raise EventTooLarge(MAX_EVENT)


class HttpWatchEngine:
    """Keeps a :class:`CacheState` in step with one tenant through a ``kvconf serve``."""

    def __init__(
        self,
        tenant: str,
        url: str,
        *,
        token: str | None,
        follow: frozenset[str] | None,
        settings: Settings,
        environ: Mapping[str, str],
        check_interval: float,
        timeout: float,
        cache_file: Path | None,
        instance_id: str | None,
    ) -> None:
        self.tenant = validate_tenant(tenant)
        if instance_id is not None and not 0 < len(instance_id) <= MAX_INSTANCE_ID:
            raise InvalidInput(
                f"instance_id must be 1 to {MAX_INSTANCE_ID} characters", field="instance_id"
            )
        self.url = url
        self._shown = safe_url(url)  # for messages: no password
        self.namespaces = follow
        self.state = CacheState(follow, environ, settings.defaults_env_prefix)
        self.delivery = Delivery(tenant, self.state, cache_file)
        self.delivery.confirmed = lambda: "startup" not in self.stale_reasons
        self.interval = max(0.5, min(60.0, check_interval))
        self._timeout = timeout
        self._cache_file = cache_file
        self._http = HttpClient(
            url, token, timeout=httpx.Timeout(max(10.0, timeout), connect=timeout)
        )
        host = socket.gethostname()
        self.instance_id = instance_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # A header value is ASCII: json.dumps escapes the rest.
        self._identity = json.dumps({
            "instance": self.instance_id, "host": host, "pid": os.getpid(),
            "started_at": time.time(), "namespaces": sorted(follow or ()),
        }, ensure_ascii=True, separators=(",", ":"))  # fmt: skip
        self.stale_reasons: set[str] = {"starting"}
        self.last_synced: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._path = f"/api/v1/tenants/{tenant}"
        self._names = None if follow is None else ",".join(sorted(follow))
        self._missing = False  # the last list found no tenant (not created, or deleted)
        self._failing: str | None = None  # what the last failure was (logged once a run)
        self._retry_after = 0.0  # what a 503 asked for

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """List the state (or load the cache file) and start following the stream."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._list("start")
        except (Unavailable, *_TRANSPORT) as exc:
            data = load_cache_file(self._cache_file, self.tenant) if self._cache_file else None
            why = str(exc) or f"no answer within {self._timeout:g} s"
            if data is None:
                raise Unavailable(
                    f"watcher of {self.tenant!r} cannot reach {self._shown} and has no cache file: "
                    f"{why}",
                    reason="start",
                ) from exc
            log.warning("%s unreachable (%s); serving the cache file at revision %d",
                        self._shown, why, data.revision)  # fmt: skip
            self.state.set_schemas(data.schema_gen, dict(data.schemas))
            self.state.replace(data.epoch, data.revision, data.namespaces)
            self.stale_reasons.add("startup")
        self.stale_reasons.discard("starting")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(), name="kvconf-watch-stream")]
        self._tasks += [loop.create_task(c, name=n) for n, c in self.delivery.loops()]

    async def aclose(self) -> None:
        """Stop following and write the cache file."""
        if self._closed:
            return
        self._closed = True
        self.delivery.closed = True
        self.delivery.wake_loops()
        try:
            for task in self._tasks:
                await stop_task(task)
            self.delivery.close()
            await self.delivery.save()
        finally:
            await self._http.aclose()

    def nudge(self) -> None:
        """Nothing to do: the stream delivers every revision (``progress`` included)."""

    # -- listing ---------------------------------------------------------------------

    async def _list(self, reason: str) -> None:
        """Read the followed state at one revision and apply the net difference."""
        params = {} if self._names is None else {"namespaces": self._names}
        try:
            doc = await self._http.request("GET", f"{self._path}/state", params=params)
            found = msgspec.convert(doc, _State)
        except TenantNotFound:
            found = _State(epoch="", revision=0)  # not created yet, or deleted
            if not self._missing:
                log.warning("watcher of %s: no such tenant at %s (or the token may not see it);"
                            " waiting for it", self.tenant, self._shown)  # fmt: skip
            self._missing = True
        else:
            self._missing = False
        state = self.state
        state.set_schemas(state.schema_gen + 1, found.schemas)
        changes = state.replace(found.epoch, found.revision, found.namespaces)
        if reason != "start":
            log.info("watcher of %s resynced (%s) at revision %d", self.tenant, reason,
                     found.revision)  # fmt: skip
        self.delivery.applied(changes, reason)
        self.stale_reasons.discard("startup")
        self.last_synced = time.time()

    # -- following -------------------------------------------------------------------

    async def _follow(self) -> None:
        """Follow the stream for ever: reconnect with backoff after any failure."""
        backoff = Backoff(healthy_after=max(1.0, 2 * self.interval))
        while not self._closed:
            try:
                if not await self._stream(backoff):
                    continue  # no such tenant yet: looked again after an interval
                failure = "the server ended the stream"
            except _Relist as exc:
                await self._relist(str(exc), backoff)
                continue
            except EventTooLarge:
                await self._relist("an event too large to buffer", backoff)
                continue
            except (KvconfError, *_TRANSPORT) as exc:
                failure = _describe(exc)
                if isinstance(exc, NotFound) and not isinstance(exc, TenantNotFound):
                    failure = f"{failure} (a namespace the token does not see?)"
            except Exception as exc:  # a bug or a surprise: never a silent, dead watcher
                log.exception("watcher of %s: unexpected failure of its stream", self.tenant)
                failure = f"unexpected {type(exc).__name__}"
            self.stale_reasons.add("stream")
            if failure != self._failing:
                log.warning("watcher of %s lost its stream from %s: %s", self.tenant, self._shown,
                            failure)  # fmt: skip
                self._failing = failure
            delay, self._retry_after = max(backoff.down(), self._retry_after), 0.0
            await asyncio.sleep(delay)

    async def _relist(self, reason: str, backoff: Backoff) -> None:
        """Re-read the state; after a failure wait as after a lost stream."""
        try:
            await self._list(reason)
        except (KvconfError, *_TRANSPORT) as exc:
            self.stale_reasons.add("stream")
            log.warning("watcher of %s could not re-read the state: %s", self.tenant,
                        _describe(exc))  # fmt: skip
            delay, self._retry_after = max(backoff.down(), self._retry_after), 0.0
            await asyncio.sleep(delay)
        else:
            backoff.reset()

    async def _stream(self, backoff: Backoff) -> bool:
        """Follow one connection until it ends (True), or wait for the tenant (False)."""
        state = self.state
        params: dict[str, Any] = {"heartbeat": self.interval}
        if self._names is not None:
            params["namespaces"] = self._names
        # The epoch on every resume: a history replaced while away means a reset.
        # A cache that found no tenant names none, so the tenant's first stream
        # starts with a reset (one re-list) instead of replaying its whole log
        # (a tenant soft-deleted and brought back still has it).
        params["epoch"] = state.epoch or NO_EPOCH
        headers = {
            "Accept": "text/event-stream",
            "Last-Event-ID": str(state.revision),
            "X-Kvconf-Watcher": self._identity,
        }
        # Nothing heard for two heartbeats: the stream (or the server) is gone.
        timeout = httpx.Timeout(2 * self.interval + 0.1, connect=self._timeout)
        async with self._http.stream(
            f"{self._path}/watch", params=params, headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                body = await response.aread()
                try:
                    doc = msgspec.json.decode(body) if body else None
                except msgspec.DecodeError:
                    doc = None
                if response.status_code == 404 and _code(doc) == "tenant_not_found":
                    await self._wait_for_tenant()
                    return False
                if response.status_code == 503:
                    self._retry_after = _retry_after(response.headers.get("Retry-After"))
                raise error_from(response.status_code, doc)
            backoff.up()
            if self._failing is not None:
                log.info("watcher of %s follows %s again", self.tenant, self._shown)
                self._failing = None
            if "startup" in self.stale_reasons:
                raise _Relist("startup")  # a cache file's state: confirm it first
            self.stale_reasons.discard("stream")
            async for frame in sse_frames(response):
                if frame is not None:
                    await self._on_frame(*frame)
                self.last_synced = time.time()
        return True

    async def _wait_for_tenant(self) -> None:
        """The tenant does not exist (yet): an empty cache, checked again every interval."""
        if not self._missing:
            raise _Relist("tenant")
        self.stale_reasons.discard("stream")
        self.last_synced = time.time()
        await asyncio.sleep(self.interval)

    async def _on_frame(self, name: str, data: str) -> None:
        state = self.state
        if name == "progress":
            revision = _progress_decoder.decode(data).revision
            if revision > state.revision:
                state.revision = revision
                self.delivery.advanced()
            return
        if name == "error":
            raise error_from(0, {"error": msgspec.json.decode(data) if data else {}})
        if name not in ("change", "schema"):
            raise _Relist(name)  # reset, tenant, or a type this client does not know
        event = _event_decoder.decode(data)
        if event.epoch != state.epoch and not (state.revision == 0 and not state.epoch):
            raise _Relist("epoch")
        if event.revision <= state.revision:
            return
        state.epoch = event.epoch
        if name == "change":
            self.delivery.applied(state.apply_event(event), None)
            return
        before = state.effective_views(state.schema_scope(event.namespace))
        doc = await self._http.request("GET", f"{self._path}/schemas")
        schemas = msgspec.convert(doc["schemas"], dict[str, Schema])
        state.set_schemas(state.schema_gen + 1, schemas)
        state.revision = event.revision
        self.delivery.schema_applied(state.schema_changes(event.revision, before, event.actor))

    # -- fleet (reported by the server) -------------------------------------------------

    @property
    def identity(self) -> str:
        """What the stream tells the server about this watcher (JSON)."""
        return self._identity


def _retry_after(header: str | None) -> float:
    """A 503's ``Retry-After`` in seconds, spread over up to half as long again (at most 60)."""
    try:
        seconds = min(60.0, max(0.0, float(header or 0)))
    except ValueError:
        return 0.0
    return seconds * random.uniform(1.0, 1.5)


def _code(doc: Any) -> str:
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Unauthorized):
        return f"the token was refused ({exc.message})"
    if isinstance(exc, KvconfError):
        return exc.message
    return str(exc) or type(exc).__name__
