"""Prometheus metrics of the API, in a registry of their own per app.

A pure ASGI middleware counts requests and their latency by route template
(never by raw path, so names in URLs cannot blow up the label space). The
store's Redis client is timed per command (:meth:`Metrics.instrument_redis`).
Gauges ops alert on are refreshed when ``/metrics`` is scraped
(:meth:`Metrics.refresh`): each watched tenant's revision, how far this
process's watchers (the read cache's and the SSE streams) are behind it,
stale watchers, and the age and outcome of the last scheduled snapshot and
export.

With ``kvconf serve --workers N`` the server sets ``PROMETHEUS_MULTIPROC_DIR``
before the workers start: counters and histograms are summed over every
worker whichever one is scraped; gauges follow their ``multiprocess_mode``
(open streams summed over live workers, revisions and lags the maximum).
``*_created`` series are off.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvconf import _jobs
from kvconf._redis.names import TenantKeys

__all__ = ["Metrics", "MetricsMiddleware", "StreamState"]

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: Seconds an SSE stream may stay behind its tenant's revision before it counts as stale.
STALE_STREAM_SECONDS = 10.0
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 5)


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@dataclass(slots=True)
class StreamState:
    """An open SSE stream: its tenant, the last revision sent and the newest seen.

    ``sent`` is None until the stream knows where it starts (no lag to report).
    """

    tenant: str
    sent: int | None = None
    current: int = 0
    behind_since: float | None = None

    def update(self, sent: int, current: int) -> None:
        """Note the stream's position after one pass over the log."""
        self.sent, self.current = sent, current
        if current <= sent:
            self.behind_since = None
        elif self.behind_since is None:
            self.behind_since = time.monotonic()


class Metrics:
    """Every metric the API exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kvconf_http_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "kvconf_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.writes = Counter("kvconf_writes", "Committed writes by kind", ["kind"], registry=r)
        self.conflicts = Counter("kvconf_conflicts", "Compare-and-set conflicts", registry=r)
        self.rollbacks = Counter("kvconf_rollbacks", "Rollbacks committed", ["scope"], registry=r)
        self.errors = Counter("kvconf_errors", "Error responses by code", ["code"], registry=r)
        self.sse_streams = Gauge(
            "kvconf_sse_streams_open", "Open watch (SSE) streams", registry=r,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.redis_latency = Histogram(
            "kvconf_redis_command_duration_seconds",
            "Latency of Redis commands sent by the API's store (pipelines not included)",
            ["command"],
            registry=r,
            buckets=_REDIS_BUCKETS,
        )
        self.tenant_revision = Gauge(
            "kvconf_tenant_revision", "Current revision of each tenant watched by this process",
            ["tenant"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.watcher_lag = Gauge(
            "kvconf_watcher_lag_revisions",
            "Revisions the most-behind watcher of a tenant lags its revision, by kind "
            "(cache: the API read cache, sse: watch streams)",
            ["kind", "tenant"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.stale_watchers = Gauge(
            "kvconf_watchers_stale",
            "Watchers that cannot vouch for their state (cache: stale flag; sse: behind for "
            f"more than {STALE_STREAM_SECONDS:g} s)",
            ["kind"], registry=r, multiprocess_mode="livesum",
        )  # fmt: skip
        self.job_age = Gauge(
            "kvconf_scheduled_job_last_run_age_seconds",
            "Seconds since the last scheduled run of a job (snapshot, export); absent: none yet",
            ["job"], registry=r, multiprocess_mode="min",
        )  # fmt: skip
        self.job_success_age = Gauge(
            "kvconf_scheduled_job_last_success_age_seconds",
            "Seconds since the last successful scheduled run of a job",
            ["job"], registry=r, multiprocess_mode="min",
        )  # fmt: skip
        self.job_ok = Gauge(
            "kvconf_scheduled_job_last_ok",
            "1 if the last scheduled run of a job succeeded, else 0",
            ["job"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.job_failures = Gauge(
            "kvconf_scheduled_job_failures",
            "Failed scheduled runs of a job since the process started",
            ["job"], registry=r, multiprocess_mode="sum",
        )  # fmt: skip
        #: Open SSE streams of this process (see :class:`StreamState`).
        self.streams: dict[int, StreamState] = {}
        self._redis_children: dict[str, Any] = {}
        if not _multiprocess():
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        self.reads = Counter(
            "kvconf_reads", "Key, namespace and per-AI reads by source", ["source"], registry=r
        )
        self._reads = {s: self.reads.labels(s) for s in ("cache", "redis")}

        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._writes: dict[str, Any] = {}

    def read(self, cached: bool) -> None:
        """Count one read served from the read cache (``cached``) or from Redis."""
        self._reads["cache" if cached else "redis"].inc()

    def wrote(self, kind: str) -> None:
        """Count one committed write of ``kind`` (label child cached: hot path)."""
        child = self._writes.get(kind)
        if child is None:
            child = self._writes[kind] = self.writes.labels(kind)
        child.inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (label children cached: hot path)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            if len(self._children) > 10_000:
                self._children.clear()
            children = self._children[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)

    def instrument_redis(self, client: Any) -> None:
        """Time every command ``client`` sends on its own (one wrapper per client)."""
        send = client.execute_command
        children = self._redis_children
        histogram = self.redis_latency

        async def execute_command(*args: Any, **options: Any) -> Any:
            start = time.perf_counter()
            try:
                return await send(*args, **options)
            finally:
                name = args[0] if args else "?"
                child = children.get(name)
                if child is None:
                    label = (name.decode() if isinstance(name, bytes) else str(name)).upper()
                    child = children[name] = histogram.labels(label.split(" ", 1)[0][:32])
                child.observe(time.perf_counter() - start)

        client.execute_command = execute_command

    async def refresh(self, store: Any, cache: Any) -> None:
        """Set the scrape-time gauges from this process's watchers and job records."""
        watchers = cache.watchers() if cache is not None else {}
        tenants = set(watchers) | {s.tenant for s in self.streams.values()}
        revisions: dict[str, int] = {}
        for tenant in sorted(tenants):
            try:
                raw = await store.redis.get(TenantKeys(tenant).rev)
            except Exception:  # noqa: S112 - Redis down: /readyz says so; keep scraping
                continue
            revisions[tenant] = int(raw or 0)
        self.tenant_revision.clear()
        self.watcher_lag.clear()
        for tenant, revision in revisions.items():
            self.tenant_revision.labels(tenant).set(revision)
        stale_cache = 0
        for tenant, watcher in watchers.items():
            stale_cache += bool(watcher.stale)
            if tenant in revisions:
                lag = max(0, revisions[tenant] - watcher.revision)
                self.watcher_lag.labels("cache", tenant).set(lag)
        now = time.monotonic()
        stale_sse = 0
        lags: dict[str, int] = {}
        for stream in list(self.streams.values()):
            if stream.sent is None:
                continue
            current = max(stream.current, revisions.get(stream.tenant, 0))
            lags[stream.tenant] = max(lags.get(stream.tenant, 0), current - stream.sent)
            if stream.behind_since is not None and now - stream.behind_since > STALE_STREAM_SECONDS:
                stale_sse += 1
        for tenant, lag in lags.items():
            self.watcher_lag.labels("sse", tenant).set(max(0, lag))
        self.stale_watchers.labels("cache").set(stale_cache)
        self.stale_watchers.labels("sse").set(stale_sse)
        wall = time.time()
        for job, status in list(_jobs.JOBS.items()):
            self.job_age.labels(job).set(wall - status.last_run)
            if status.last_success:
                self.job_success_age.labels(job).set(wall - status.last_success)
            self.job_ok.labels(job).set(1 if status.ok else 0)
            self.job_failures.labels(job).set(status.failures)

    def render(self) -> bytes:
        """The text exposition format (summed over workers in multiprocess mode)."""
        if _multiprocess():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            PlatformCollector(registry=registry)  # the same in every worker
            return generate_latest(registry)
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count and time every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(scope["method"], name, status, time.perf_counter() - start)
