"""Fixtures: every store, watcher and API test runs on fakeredis and on a real
redis-server started here on a free loopback port."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvconf import Settings, Store
from kvconf._redis.connect import _servers

from .redis_cluster import RedisCluster
from .redis_server import RedisServer, redis_binary

BACKENDS = ["fake", "redis"]


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the whole session (tests use unique tenants)."""
    server = RedisServer(tmp_path_factory.mktemp("redis-shared")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A local three-primary Redis Cluster, started once for the whole run."""
    redis_binary()
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli not installed")
    started = RedisCluster(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield started
    started.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private real redis-server the test may kill, pause and restart."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL: a fresh embedded fakeredis server, or the real shared one."""
    if request.param == "fake":
        name = f"test-{uuid.uuid4().hex}"
        yield f"memory://{name}"
        _servers.pop(name, None)
    else:
        yield request.getfixturevalue("shared_redis").url


@pytest.fixture
def tenant() -> str:
    """A tenant name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def make_store(backend_url: str) -> AsyncIterator[Callable[..., Store]]:
    """Factory of stores on the test's backend; ``make_store(history_limit=3)``."""
    stores: list[Store] = []

    def make(environ: dict[str, str] | None = None, **settings: Any) -> Store:
        store = Store(settings=Settings(redis_url=backend_url, **settings), environ=environ)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture
async def store(make_store: Callable[..., Store]) -> Store:
    """A store on the test's backend with default settings and an empty environment."""
    return make_store(environ={})
