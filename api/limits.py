"""Request body size limit as a pure ASGI middleware (413).

A declared ``Content-Length`` over the limit is refused before the app runs;
a chunked body is counted as it is received and refused as soon as it passes
the limit (the route's body read raises :class:`BodyTooLarge`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import CLOUDBRAIN_PREFIX, BodyTooLarge

__all__ = ["DEFAULT_MAX_BODY", "BodyLimitMiddleware"]

#: Default largest request body, in bytes.
DEFAULT_MAX_BODY = 2 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuse request bodies larger than ``limit`` bytes with a 413."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._refuse(scope, send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        exc = BodyTooLarge(self.limit)
        payload: Any
        if str(scope.get("path", "")).startswith(CLOUDBRAIN_PREFIX):
            payload = {"success": False, "error": exc.message}
        else:
            payload = {"error": exc.to_dict()}
        body = msgspec.json.encode(payload)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
