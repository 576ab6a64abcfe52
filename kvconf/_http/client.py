"""The HTTP connection to a ``kvconf serve``: bearer auth, timeouts, retries of
idempotent reads, and the REST error body mapped back to kvconf's exceptions.

Error bodies are ``{"error": {"code", "message", ...details}}``; the ``code``
names a class of :mod:`kvconf.exceptions` (found by walking the tree, so a new
exception needs no entry here). Codes only the server knows fall back on the
status (404 → NotFound, 409 → Conflict, 422 → InvalidInput, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import msgspec

from .. import exceptions as exc_module
from ..exceptions import (
    Conflict,
    Forbidden,
    HistoryTrimmed,
    InvalidInput,
    KeyConflict,
    KvconfError,
    NotFound,
    SchemaProblem,
    SchemaViolation,
    Unauthorized,
    Unavailable,
    VersionConflict,
)

__all__ = ["HttpClient", "error_from", "reason_header"]

#: Seconds to wait for a connection, a read, a write (a big change set), the pool.
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
#: Retries of an idempotent read after a transport error or a 502/503/504, and the pauses.
RETRY_PAUSES = (0.1, 0.4)
_RETRY_STATUSES = frozenset({502, 503, 504})

_BY_STATUS: dict[int, type[KvconfError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: HistoryTrimmed,
    412: VersionConflict,
    413: InvalidInput,
    422: InvalidInput,
}


def reason_header(reason: str) -> dict[str, str | bytes]:
    """The audit reason as the ``X-Change-Reason`` header (UTF-8 bytes: any language)."""
    return {"X-Change-Reason": reason.encode()} if reason else {}


def _classes() -> dict[str, type[KvconfError]]:
    found: dict[str, type[KvconfError]] = {}
    pending: list[type[KvconfError]] = [KvconfError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == exc_module.__name__:
            found[cls.code] = cls
        pending.extend(cls.__subclasses__())
    # The API answers a failed If-Match with its own code (and a 412).
    found["precondition_failed"] = VersionConflict
    return found


_BY_CODE = _classes()


def error_from(status: int, body: Any) -> KvconfError:
    """The library exception a server's error answer stands for."""
    doc = body.get("error") if isinstance(body, dict) else None
    if not isinstance(doc, dict):
        doc = {}
    details = {k: v for k, v in doc.items() if k not in ("code", "message")}
    code = str(doc.get("code", ""))
    message = str(doc.get("message") or f"the kvconf server answered HTTP {status}")
    cls = _BY_CODE.get(code)
    if cls is None:
        cls = Unavailable if status >= 500 else _BY_STATUS.get(status, KvconfError)
    # Built without the subclass's __init__: the server already wrote the
    # sentence, and the details are those the library would have attached.
    exc = cls.__new__(cls)
    KvconfError.__init__(exc, message, **details)
    if code and code != cls.code:
        exc.code = code  # a code only the server knows (schema_not_found): kept for callers
    for name, value in details.items():
        # As the library's own __init__s do (exc.tenant, exc.keys, ...); never
        # over an attribute Exception or KvconfError already has (args, details).
        if name not in ("conflicts", "problems") and not hasattr(exc, name):
            setattr(exc, name, value)
    if isinstance(exc, VersionConflict):
        exc.conflicts = [msgspec.convert(c, KeyConflict) for c in details.get("conflicts", [])]
    if isinstance(exc, SchemaViolation):
        exc.problems = [msgspec.convert(p, SchemaProblem) for p in details.get("problems", [])]
    return exc


class HttpClient:
    """One ``httpx.AsyncClient`` to a kvconf server, answering JSON or raising KvconfError."""

    def __init__(self, base_url: str, token: str | None, *, timeout: httpx.Timeout = TIMEOUT):
        headers = {"Accept": "application/json", "User-Agent": "kvconf-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=timeout)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> Any:
        """Send one request; the decoded JSON answer, or the mapped exception.

        GETs are retried after a transport error or a 502/503/504; writes never
        are (a write that timed out may have been applied).
        """
        content = None if body is None else msgspec.json.encode(body)
        sent = {
            k.encode(): v if isinstance(v, bytes) else v.encode()
            for k, v in (headers or {}).items()
        }
        if content is not None:
            sent[b"Content-Type"] = b"application/json"
        pauses = RETRY_PAUSES if method == "GET" else ()
        for attempt in range(len(pauses) + 1):
            last = attempt == len(pauses)
            try:
                resp = await self._http.request(
                    method, path, params=params, content=content, headers=sent
                )
            except httpx.TransportError as exc:
                if not last:
                    await asyncio.sleep(pauses[attempt])
                    continue
                maybe = "" if method == "GET" else " (the write may still be applied)"
                raise Unavailable(
                    f"kvconf server {self.base_url}: {type(exc).__name__}{maybe}",
                    reason=type(exc).__name__,
                ) from exc
            if resp.status_code in _RETRY_STATUSES and not last:
                await asyncio.sleep(pauses[attempt])
                continue
            break
        try:
            doc = msgspec.json.decode(resp.content) if resp.content else None
        except msgspec.DecodeError:
            doc = None
        if resp.status_code >= 400:
            raise error_from(resp.status_code, doc)
        return doc

    @contextlib.asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = None,  # noqa: ASYNC109 (httpx's per-request timeouts)
    ) -> AsyncIterator[httpx.Response]:
        """A streamed GET (the SSE watch): the response, whatever its status, read by the caller.

        A transport error raises :class:`Unavailable`.
        """
        request = self._http.build_request(
            "GET", path, params=params, headers=headers,
            timeout=timeout if timeout is not None else self._http.timeout,
        )  # fmt: skip
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"kvconf server {self.base_url}: {type(exc).__name__}", reason=type(exc).__name__
            ) from exc
        try:
            yield response
        finally:
            await response.aclose()
