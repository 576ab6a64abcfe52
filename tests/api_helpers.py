"""Helpers of the API tests: an app on a backend, clients, token clean-up."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from kvconf import Settings
from kvconf._redis.names import TOKEN_NAMES_KEY, TOKENS_KEY
from kvconf.api.app import create_app

ADMIN = "test-admin-token-" + uuid.uuid4().hex


@asynccontextmanager
async def running_app(url: str, **settings: Any) -> AsyncIterator[FastAPI]:
    """The API app with its lifespan entered; tokens it created are removed at exit."""
    max_body = settings.pop("max_body_bytes", None)
    with tempfile.TemporaryDirectory(prefix="kvconf-api-") as data_dir:
        settings.setdefault("data_dir", Path(data_dir))
        app = create_app(Settings(redis_url=url, **settings), max_body_bytes=max_body)
        async with _lifespan(app):
            yield app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with app.router.lifespan_context(app):
        try:
            yield
        finally:
            redis = app.state.store.redis
            for name in await app.state.auth.list():
                await redis.hdel(TOKEN_NAMES_KEY, name.name)
            await redis.delete(TOKENS_KEY)


def client(app: FastAPI, token: str | None = None, host: str = "127.0.0.1") -> httpx.AsyncClient:
    """An in-process client of ``app`` (``token``: bearer)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://kvconf", headers=headers)


async def make_token(app: FastAPI, name: str, grants: dict[str, list[str]]) -> str:
    """Create a token through the API as the admin."""
    async with client(app, ADMIN) as c:
        r = await c.post("/api/v1/tokens", json={"name": name, "grants": grants})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token
