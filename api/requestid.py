"""``X-Request-ID``: one id per request, in the response and in every log line.

The caller's id is kept when it is sane (1 to 64 characters of
``A-Z a-z 0-9 . _ : -``), so a trace can cross services; otherwise, or when
absent, the server makes one. The id is set in
:data:`kvconf._logging.request_id` for the length of the request, where the
logging filter picks it up.
"""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvconf._logging import request_id

__all__ = ["HEADER", "RequestIdMiddleware", "sane_request_id"]

HEADER = "X-Request-ID"
_SANE = re.compile(rb"[A-Za-z0-9._:\-]{1,64}")
_HEADER_LOWER = HEADER.lower().encode()


def sane_request_id(raw: bytes | None) -> str:
    """The caller's id when it is sane, else a fresh one (32 hex digits)."""
    if raw is not None and _SANE.fullmatch(raw):
        return raw.decode()
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Pure ASGI middleware: pick the id, expose it to logging, echo it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _HEADER_LOWER:
                given = value
                break
        rid = sane_request_id(given)
        scope.setdefault("state", {})["request_id"] = rid
        header = (_HEADER_LOWER, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
