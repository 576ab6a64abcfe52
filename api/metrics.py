"""Prometheus metrics of the API, in a registry of their own per app.

A pure ASGI middleware counts requests and their latency by route template
(never by raw path, so names in URLs cannot blow up the label space).
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]


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
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.writes = Counter("kvconf_writes", "Committed writes by kind", ["kind"], registry=r)
        self.conflicts = Counter("kvconf_conflicts", "Compare-and-set conflicts", registry=r)
        self.rollbacks = Counter("kvconf_rollbacks", "Rollbacks committed", ["scope"], registry=r)
        self.errors = Counter("kvconf_errors", "Error responses by code", ["code"], registry=r)
        self.watchers = Gauge("kvconf_watchers", "Open watch (SSE) streams", registry=r)
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

    def render(self) -> bytes:
        """The text exposition format."""
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
