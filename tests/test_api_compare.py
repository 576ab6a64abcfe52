"""``GET /api/v1/compare``, ``?category=`` and CloudBrain PUTs that list every problem."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from .api_helpers import ADMIN, client, make_token, running_app

SECRET = "s3cret-" + uuid.uuid4().hex


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


async def _seed(c: httpx.AsyncClient, tenant: str, values: dict[str, object]) -> None:
    base = f"/api/v1/tenants/{tenant}/namespaces/ai-12"
    r = await c.post(base, json={"values": values})
    assert r.is_success, r.text
    schema = {"keys": {"pw": {"type": "str", "sensitive": True}}}
    assert (await c.put(f"{base}/schema", json=schema)).is_success


async def test_compare_across_tenants_masks_and_hides(app: FastAPI, tenant: str) -> None:
    staging = f"{tenant}-stg"
    async with client(app, ADMIN) as c:
        await _seed(c, staging, {"timeout": 30, "beta": True, "same": "x", "pw": SECRET})
        await _seed(c, tenant, {"timeout": "30", "old": 1, "same": "x", "pw": "other"})
        r = await c.get("/api/v1/compare", params={"left": f"{staging}/ai-12",
                                                    "right": f"{tenant}/ai-12"})  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
    assert (body["left"], body["right"], body["same"]) == (f"{staging}/ai-12", f"{tenant}/ai-12", 1)
    got = {d["key"]: (d["change"], d["left"], d["right"]) for d in body["differences"]}
    # 30 and "30" differ: a value's JSON type is part of it
    assert got["timeout"] == ("different", 30, "30")
    assert got["beta"] == ("only_left", True, None)
    assert got["old"] == ("only_right", None, 1)
    assert got["pw"] == ("different", SECRET, "other")  # the admin holds secrets
    reader = await make_token(app, f"r-{tenant}", {staging: ["read"], tenant: ["read"]})
    async with client(app, reader) as c:
        r = await c.get("/api/v1/compare", params={"left": f"{staging}/ai-12",
                                                    "right": f"{tenant}/ai-12"})  # fmt: skip
        masked = {d["key"]: d for d in r.json()["differences"]}
        assert (masked["pw"]["left"], masked["pw"]["right"]) == ("***", "***")
        assert SECRET not in r.text
    one_side = await make_token(app, f"o-{tenant}", {tenant: ["read"]})
    async with client(app, one_side) as c:
        r = await c.get("/api/v1/compare", params={"left": f"{staging}/ai-12",
                                                    "right": f"{tenant}/ai-12"})  # fmt: skip
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "tenant_not_found"
        r = await c.get("/api/v1/compare", params={"left": "no-slash", "right": f"{tenant}/a"})
        assert r.status_code == 422


async def test_namespace_read_filters_by_category(app: FastAPI, tenant: str) -> None:
    base = f"/api/v1/tenants/{tenant}/namespaces/svc"
    async with client(app, ADMIN) as c:
        assert (
            await c.post(base, json={"values": {"hook": "h", "channel": "c", "x": 1}})
        ).is_success
        schema = {"keys": {"hook": {"type": "str", "category": "slack"},
                           "channel": {"type": "str", "category": "slack"},
                           "x": {"category": "misc"}}}  # fmt: skip
        assert (await c.put(f"{base}/schema", json=schema)).is_success
        r = await c.get(base, params={"category": "slack"})
        assert r.status_code == 200, r.text
        assert sorted(r.json()["keys"]) == ["channel", "hook"]
        assert sorted((await c.get(base)).json()["keys"]) == ["channel", "hook", "x"]
        bad = {"keys": {"x": {"category": "not a name!"}}}
        r = await c.put(f"{base}/schema", json=bad)
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_schema"


async def test_cloudbrain_put_lists_every_problem(backend_url: str) -> None:
    ai_id = random.randrange(10**6, 10**9)
    async with running_app(backend_url) as app, client(app) as c:
        body = {"stale_timeout": "soon", "grace_period": "-5", "max_sleep_time": "later"}
        r = await c.put(f"/api/v1/config/{ai_id}", json=body)
        assert r.status_code == 422, r.text
        out = r.json()
        assert out["success"] is False
        keys = sorted(p["key"] for p in out["problems"])
        assert keys == ["grace_period", "max_sleep_time", "stale_timeout"]
        for key in keys:
            assert key in out["error"]


async def test_compare_never_confirms_a_guessed_secret(backend_url: str, tenant: str) -> None:
    from .api_helpers import ADMIN, client, make_token, running_app

    mine = f"{tenant}-mine"
    async with running_app(backend_url, admin_token=ADMIN) as app:
        async with client(app, ADMIN) as c:
            schema = {"keys": {"password": {"type": "str", "sensitive": True}}}
            await c.put(f"/api/v1/tenants/{tenant}/namespaces/app/schema", json=schema)
            await c.put(
                f"/api/v1/tenants/{tenant}/namespaces/app/keys/password", json={"value": "hunter2"}
            )
        token = await make_token(app, f"spy-{tenant}", {tenant: ["read"], mine: ["write"]})
        answers = []
        async with client(app, token) as c:
            for guess in ("letmein", "hunter2"):
                url = f"/api/v1/tenants/{mine}/namespaces/app/keys/password"
                await c.put(url, json={"value": guess})
                params = {"left": f"{tenant}/app", "right": f"{mine}/app"}
                answers.append((await c.get("/api/v1/compare", params=params)).json())
        seen = [(a["same"], [(d["key"], d["change"], d["left"]) for d in a["differences"]])
                for a in answers]  # fmt: skip
        assert seen[0] == seen[1]  # the right guess looks like the wrong one
        assert answers[1]["same"] == 0
        assert answers[1]["differences"][0]["left"] == "***"
