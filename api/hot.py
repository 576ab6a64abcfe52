"""Hot routes: a lean handler in front of a documented FastAPI route.

FastAPI's per-request work (dependency solving, parameter validation, two
exit stacks) costs more than a Redis round trip on the key routes. A hot
route keeps its FastAPI declaration (OpenAPI, validation of odd input) but
is served by a plain ``handler(request)``; the handler returns None to hand
the request to FastAPI unchanged (it must do so before reading the body).
Exceptions go through the app's one handler, exactly as for other routes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ._starlette import wrap_app_handling_exceptions

__all__ = ["HOT_ROUTES", "Handler", "hot"]

#: A lean handler: a response, or None to let FastAPI handle the request.
Handler = Callable[[Request], Awaitable[Response | None]]

#: Every hot route, in the order they were made hot (the app matches them first).
HOT_ROUTES: list[APIRoute] = []


def hot(router: APIRouter, endpoint: Callable[..., Any], handler: Handler) -> None:
    """Serve the route of ``endpoint`` in ``router`` with ``handler``."""
    for route in router.routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            route.app = _lean(handler, route.app)
            HOT_ROUTES.append(route)
            return
    raise LookupError(f"no route for {endpoint.__qualname__}")


def _lean(handler: Handler, fallback: ASGIApp) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handler(request)
            if response is None:
                await fallback(scope, receive, send)
            else:
                await response(scope, receive, send)

        await wrap_app_handling_exceptions(serve, request)(scope, receive, send)

    return app
