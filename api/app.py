"""The REST facade over kvconf: ``create_app()``, the lifespan, the one error handler.

``uvicorn --factory api.app:create_app`` (what ``kvconf serve`` runs) reads
:class:`~kvconf.config.Settings` from ``KVCONF_*`` environment variables. The
store is opened once in the lifespan (embedded fakeredis when no Redis URL is
set), with the read cache (see :mod:`api.cache`; ``KVCONF_API_READ_CACHE=false``
turns it off), and the server's background services run for the app's
lifetime.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from kvconf._redis.connect import embedded_server
from kvconf._snapshot.background import background_services
from kvconf._snapshot.embedded import open_embedded_store, persister_of
from kvconf.config import Settings, is_loopback
from kvconf.exceptions import KvconfError
from kvconf.export import export_service
from kvconf.store import Store

from .auth import Authenticator
from .cache import ReadCache
from .errors import (
    CLOUDBRAIN_PREFIX,
    http_error_handler,
    kvconf_error_handler,
    validation_error_handler,
)
from .fanout import FanOut
from .fleet import StreamFleet
from .hot import HOT_ROUTES
from .limits import DEFAULT_MAX_BODY, BodyLimitMiddleware
from .metrics import Metrics, MetricsMiddleware
from .openapi import build_openapi, docs_routes
from .requestid import RequestIdMiddleware
from .routes import (
    changes,
    cloudbrain,
    compare,
    console,
    history,
    keys,
    ops,
    schemas,
    snapshots,
    stats,
    tenants,
    tokens,
    watch,
)
from .sse import SERVER_SEND

__all__ = ["App", "create_app"]

log = logging.getLogger("kvconf.api")


async def open_store(settings: Settings) -> Store:
    """The app's store: embedded (loaded from the data dir) or a Redis server."""
    if settings.redis_url is None:
        return await open_embedded_store(settings)
    return Store(settings=settings)


def _watchable(store: Store, settings: Settings) -> bool:
    """True when a watcher opened on ``settings.redis_url`` can follow this store's server.

    An embedded store may sit on a private in-memory server (a second data
    dir in one process) that a watcher with no URL would not reach.
    """
    if settings.redis_url is not None:
        return True  # a server or a Cluster: watchers follow both
    persister = persister_of(store)
    return persister is not None and persister.server is embedded_server("default")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store once, run background services, close everything at exit."""
    settings: Settings = app.state.settings
    store = await open_store(settings)
    app.state.store = store
    app.state.metrics.instrument_redis(store.redis)
    app.state.auth = Authenticator(
        store.redis, settings.admin_token, allow_open=is_loopback(settings.host)
    )
    try:
        try:
            if await app.state.auth.is_open():
                log.warning(
                    "kvconf API is running OPEN: no admin token and no API tokens; "
                    "every caller is an admin"
                )
        except KvconfError as exc:
            log.warning("could not check for API tokens at start: %s", exc.message)
        try:
            repaired = await store.repair_tenants()
            if repaired:
                log.warning("listed %d tenant(s) that held data unlisted", len(repaired))
        except KvconfError as exc:
            log.warning("could not check the tenant list at start: %s", exc.message)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_services(store, settings))
            await stack.enter_async_context(export_service(store, settings))
            if app.state.read_cache and _watchable(store, settings):
                app.state.cache = await stack.enter_async_context(ReadCache(store, settings))
            app.state.fanout = fanout = FanOut(
                store, hub_url=settings.redis_url, use_hub=_watchable(store, settings),
                max_streams=settings.max_streams,
            )  # fmt: skip
            stack.push_async_callback(fanout.aclose)
            app.state.stream_fleet = stream_fleet = StreamFleet(store.redis)
            stack.push_async_callback(stream_fleet.aclose)
            yield
    finally:
        app.state.cache = None
        await store.aclose()


class App(FastAPI):
    """The FastAPI app, keeping the server's own ``send`` in the scope of each request.

    The watch streams' feed writes to parked streams through it, under the
    middlewares (:class:`api.sse.Outlet`).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request or lifespan."""
        scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    max_body_bytes: int | None = None,
    read_cache: bool | None = None,
) -> FastAPI:
    """Build the API app; ``settings`` default to ``Settings.from_env()``.

    ``read_cache`` serves reads from watchers (default:
    ``settings.api_read_cache``, i.e. ``KVCONF_API_READ_CACHE``).
    """
    settings = settings if settings is not None else Settings.from_env()
    if read_cache is None:
        read_cache = settings.api_read_cache
    app = App(
        title="kvconf",
        summary="Multi-tenant, versioned configuration store on Redis with hot reload",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.read_cache = read_cache
    app.state.cache = None
    app.state.metrics = metrics = Metrics()
    app.add_exception_handler(KvconfError, kvconf_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    # Routes are added flat, the hot ones first (no two routes match the same
    # request, so order only decides how many patterns a request is tried on):
    # FastAPI's included-router wrappers cost ~0.5 ms of matching per request.
    hot = sorted(HOT_ROUTES, key=lambda route: route.path.startswith(CLOUDBRAIN_PREFIX))
    app.router.routes[:0] = hot
    for module in (
        keys, cloudbrain, ops, stats, tenants, history, changes, schemas, watch, snapshots,
        tokens, compare, console,
    ):  # fmt: skip
        app.router.routes.extend(r for r in module.router.routes if r not in HOT_ROUTES)
    app.router.routes.extend(docs_routes())
    app.add_middleware(BodyLimitMiddleware, limit=max_body_bytes or DEFAULT_MAX_BODY)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    # Outermost: the id is set before anything else can log.
    app.add_middleware(RequestIdMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
