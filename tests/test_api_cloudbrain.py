"""The CloudBrain-compatible per-AI routes: exact shapes, layers, errors."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest

from .api_helpers import client, running_app


@pytest.fixture
async def http(backend_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(backend_url) as app, client(app) as c:
        yield c


@pytest.fixture
def ai_id() -> int:
    return random.randrange(10**6, 10**9)


async def test_get_config_has_every_known_key_as_strings(
    http: httpx.AsyncClient, ai_id: int
) -> None:
    r = await http.get(f"/api/v1/config/{ai_id}")
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert body["ai_id"] == ai_id
    conf = body["configuration"]
    assert {k: v["value"] for k, v in conf.items()} == {
        "heartbeat_interval": "60",
        "stale_timeout": "15",
        "grace_period": "2",
        "max_sleep_time": "60",
    }
    for item in conf.values():
        assert set(item) == {"value", "updated_at"}
        datetime.fromisoformat(item["updated_at"])


async def test_put_config_updates_atomically_with_exact_shape(
    http: httpx.AsyncClient, ai_id: int
) -> None:
    r = await http.put(
        f"/api/v1/config/{ai_id}", json={"stale_timeout": "30", "max_sleep_time": "480"}
    )
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "ai_id": ai_id,
        "updated_keys": ["stale_timeout", "max_sleep_time"],
        "message": "Updated 2 configuration keys",
    }
    conf = (await http.get(f"/api/v1/config/{ai_id}")).json()["configuration"]
    assert conf["stale_timeout"]["value"] == "30"
    assert conf["max_sleep_time"]["value"] == "480"
    log = (await http.get("/api/v1/tenants/default/log", params={"since": 0})).json()["events"]
    mine = [e for e in log if e["namespace"] == f"ai-{ai_id}"]
    assert len(mine) == 1
    assert len(mine[0]["changes"]) == 2


async def test_one_key_routes_exact_shapes(http: httpx.AsyncClient, ai_id: int) -> None:
    r = await http.get(f"/api/v1/config/{ai_id}/max_sleep_time")
    body = r.json()
    assert r.status_code == 200
    assert set(body) == {"success", "ai_id", "config_key", "config_value", "updated_at"}
    assert body["config_value"] == "60"
    assert body["config_key"] == "max_sleep_time"
    r = await http.put(f"/api/v1/config/{ai_id}/max_sleep_time", json={"config_value": "480"})
    assert r.status_code == 200
    assert r.json() == {
        "success": True,
        "ai_id": ai_id,
        "config_key": "max_sleep_time",
        "config_value": "480",
        "message": "Configuration updated successfully",
    }
    body = (await http.get(f"/api/v1/config/{ai_id}/max_sleep_time")).json()
    assert body["config_value"] == "480"


async def test_priority_own_over_tenant_defaults_over_env_over_default(
    http: httpx.AsyncClient, ai_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"/api/v1/config/{ai_id}/grace_period"
    assert (await http.get(url)).json()["config_value"] == "2"
    monkeypatch.setenv("KVCONF_DEFAULT_GRACE_PERIOD", "7")
    assert (await http.get(url)).json()["config_value"] == "7"
    before = (await http.get("/api/v1/tenants/default/namespaces/_defaults")).json()["keys"]
    await http.put(
        "/api/v1/tenants/default/namespaces/_defaults/keys/grace_period", json={"value": 9}
    )
    try:
        assert (await http.get(url)).json()["config_value"] == "9"
        await http.put(url, json={"config_value": 11})
        assert (await http.get(url)).json()["config_value"] == "11"
    finally:
        if "grace_period" not in before:
            await http.delete("/api/v1/tenants/default/namespaces/_defaults/keys/grace_period")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/config/abc", None),
        ("GET", "/api/v1/config/1.5/stale_timeout", None),
        ("PUT", "/api/v1/config/{id}", {"stale_timeout": "thirty"}),
        ("PUT", "/api/v1/config/{id}", {"stale_timeout": 1.5}),
        ("PUT", "/api/v1/config/{id}", {"stale_timeout": "-1"}),
        ("PUT", "/api/v1/config/{id}/stale_timeout", {"config_value": "x"}),
        ("PUT", "/api/v1/config/{id}/stale_timeout", {"config_value": True}),
        ("PUT", "/api/v1/config/{id}/stale_timeout", {"value": "5"}),
        ("PUT", "/api/v1/config/{id}/bad key", {"config_value": "5"}),
        ("PUT", "/api/v1/config/{id}", [1, 2]),
    ],
)
async def test_bad_input_is_422_in_cloudbrain_shape(
    http: httpx.AsyncClient, ai_id: int, method: str, path: str, body: object
) -> None:
    r = await http.request(method, path.format(id=ai_id), json=body)
    assert r.status_code == 422, r.text
    out = r.json()
    assert out["success"] is False
    assert isinstance(out["error"], str)
    assert out["error"]


async def test_failed_put_writes_nothing(http: httpx.AsyncClient, ai_id: int) -> None:
    r = await http.put(f"/api/v1/config/{ai_id}", json={"stale_timeout": "30", "grace_period": "x"})
    assert r.status_code == 422
    conf = (await http.get(f"/api/v1/config/{ai_id}")).json()["configuration"]
    assert conf["stale_timeout"]["value"] == "15"


async def test_unknown_key_is_404_in_cloudbrain_shape(http: httpx.AsyncClient, ai_id: int) -> None:
    r = await http.get(f"/api/v1/config/{ai_id}/no_such_key")
    assert r.status_code == 404
    assert r.json()["success"] is False
