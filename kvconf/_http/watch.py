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
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from .._redis.names import validate_tenant
from .._watch.backoff import Backoff
from .._watch.cache_file import load_cache_file
from .._watch.delivery import Delivery
from .._watch.state import CacheState
from ..config import Settings
from ..exceptions import (
    KvconfError,
    NotFound,
    TenantNotFound,
    Unauthorized,
    Unavailable,
)
from ..models import ChangeEvent, Entry, Schema
from .client import HttpClient, error_from

__all__ = ["HttpWatchEngine"]

log = logging.getLogger("kvconf.watcher")

#: The longest SSE line this client buffers (a change event is one line of JSON).
MAX_LINE = 64 * 1024 * 1024
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


async def sse_frames(response: httpx.Response) -> AsyncIterator[tuple[str, str] | None]:
    """The events of an SSE response as ``(event, data)``; None for a comment (heartbeat).

    The server writes one ``data:`` line per event; several are joined with
    newlines as the SSE specification says. ``id`` lines are not needed: an
    event's revision is in its data.
    """
    buffer = b""
    name = "message"
    data: list[str] = []
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > MAX_LINE:
            raise Unavailable("the kvconf server sent an event over the size limit",
                              reason="too_large")  # fmt: skip
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end], buffer[end + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield name, "\n".join(data)
                name, data = "message", []
            elif line.startswith(b":"):
                yield None
            else:
                field, _, value = line.decode().partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)


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
        self.url = url
        self.namespaces = follow
        self.state = CacheState(follow, environ, settings.defaults_env_prefix)
        self.delivery = Delivery(tenant, self.state, cache_file)
        self.delivery.confirmed = lambda: "startup" not in self.stale_reasons
        self.callbacks = self.delivery.callbacks
        self.resync_callbacks = self.delivery.resync_callbacks
        self.bindings = self.delivery.bindings
        self.waiters = self.delivery.waiters
        self.interval = max(0.5, min(60.0, check_interval))
        self._timeout = timeout
        self._cache_file = cache_file
        self._http = HttpClient(
            url, token, timeout=httpx.Timeout(max(10.0, timeout), connect=timeout)
        )
        host = socket.gethostname()
        self.instance_id = instance_id or f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._identity = msgspec.json.encode({
            "instance": self.instance_id, "host": host, "pid": os.getpid(),
            "started_at": time.time(), "namespaces": sorted(follow or ()),
        }).decode()  # fmt: skip
        self.stale_reasons: set[str] = {"starting"}
        self.last_synced: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._path = f"/api/v1/tenants/{tenant}"
        self._names = None if follow is None else ",".join(sorted(follow))
        self._failing: str | None = None  # what the last failure was (logged once a run)

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
                    f"watcher of {self.tenant!r} cannot reach {self.url} and has no cache file: "
                    f"{why}",
                    reason="start",
                ) from exc
            log.warning("%s unreachable (%s); serving the cache file at revision %d",
                        self.url, why, data.revision)  # fmt: skip
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
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
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
                backoff.reset()
                await self._relist(str(exc), backoff)
                continue
            except (KvconfError, *_TRANSPORT) as exc:
                failure = _describe(exc)
                if isinstance(exc, NotFound) and not isinstance(exc, TenantNotFound):
                    failure = f"{failure} (a namespace the token does not see?)"
            self.stale_reasons.add("stream")
            if failure != self._failing:
                log.warning("watcher of %s lost its stream from %s: %s", self.tenant, self.url,
                            failure)  # fmt: skip
                self._failing = failure
            await asyncio.sleep(backoff.down())

    async def _relist(self, reason: str, backoff: Backoff) -> None:
        try:
            await self._list(reason)
        except (KvconfError, *_TRANSPORT) as exc:
            self.stale_reasons.add("stream")
            log.warning("watcher of %s could not re-read the state: %s", self.tenant,
                        _describe(exc))  # fmt: skip
            await asyncio.sleep(backoff.down())

    async def _stream(self, backoff: Backoff) -> bool:
        """Follow one connection until it ends (True), or wait for the tenant (False)."""
        state = self.state
        params: dict[str, Any] = {"heartbeat": self.interval}
        if self._names is not None:
            params["namespaces"] = self._names
        if state.epoch:
            params["epoch"] = state.epoch
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
                raise error_from(response.status_code, doc)
            backoff.up()
            if self._failing is not None:
                log.info("watcher of %s follows %s again", self.tenant, self.url)
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
        if self.state.revision or self.state.epoch:
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


def _code(doc: Any) -> str:
    error = doc.get("error") if isinstance(doc, dict) else None
    return str(error.get("code", "")) if isinstance(error, dict) else ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, Unauthorized):
        return f"the token was refused ({exc.message})"
    if isinstance(exc, KvconfError):
        return exc.message
    return str(exc) or type(exc).__name__
