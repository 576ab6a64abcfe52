"""No sensitive value reaches a caller without the ``secrets`` right: a canary on every route."""

from __future__ import annotations

import itertools
import random
import re
import uuid
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI

from .api_helpers import ADMIN, client, make_token, running_app

TENANT = "default"  # the per-AI routes are a view of it


@pytest.fixture
async def app(backend_url: str) -> AsyncIterator[FastAPI]:
    async with running_app(backend_url, admin_token=ADMIN) as app:
        yield app


class Seeded:
    """Canaries planted in the tenant ``default`` for one AI namespace."""

    def __init__(self) -> None:
        self.ai = random.randrange(10**8, 10**9)
        self.ns = f"ai-{self.ai}"
        tag = uuid.uuid4().hex[:8]
        self.defaults_key = f"apikey{tag}"  # value in _defaults, sensitive only in ns's schema
        self.own_key = f"token{tag}"  # sensitive in _defaults' schema, value in ns
        self.pin_key = f"pin{tag}"  # sensitive; an old version today's schema refuses
        self.canaries = [f"CANARY-{i}-{uuid.uuid4().hex}" for i in range(5)]


async def _seed(app: FastAPI) -> Seeded:
    s = Seeded()
    c0, c1, c2, c3, c4 = s.canaries
    base = f"/api/v1/tenants/{TENANT}/namespaces"
    async with client(app, ADMIN) as c:
        r = await c.put(f"{base}/_defaults/keys/{s.defaults_key}", json={"value": c0})
        assert r.is_success, r.text
        r = await c.put(f"{base}/_defaults/keys/{s.defaults_key}", json={"value": c1})
        assert r.is_success, r.text
        schema = {"keys": {s.defaults_key: {"type": "str", "sensitive": True}}}
        r = await c.put(f"{base}/{s.ns}/schema", json=schema)
        assert r.is_success, r.text
        r = await c.put(f"{base}/{s.ns}/keys/{s.own_key}", json={"value": c2})
        assert r.is_success, r.text
        r = await c.put(f"{base}/{s.ns}/keys/{s.pin_key}", json={"value": c3})
        assert r.is_success, r.text
        r = await c.put(f"{base}/{s.ns}/keys/{s.pin_key}", json={"value": "short"})
        assert r.is_success, r.text
        defaults_schema = (await c.get(f"/api/v1/tenants/{TENANT}/schemas")).json()["schemas"]
        keys = defaults_schema.get("_defaults", {}).get("keys", {})
        keys[s.own_key] = {"type": "str", "sensitive": True, "default": c4}
        keys[s.pin_key] = {"type": "str", "sensitive": True, "choices": ["short"]}
        r = await c.put(f"{base}/_defaults/schema", json={"keys": keys})
        assert r.is_success, r.text
    return s


async def _unseed(app: FastAPI, s: Seeded) -> None:
    base = f"/api/v1/tenants/{TENANT}/namespaces"
    async with client(app, ADMIN) as c:
        await c.delete(f"{base}/_defaults/keys/{s.defaults_key}")
        await c.delete(f"{base}/{s.ns}/schema")
        found = (await c.get(f"/api/v1/tenants/{TENANT}/schemas")).json()["schemas"]
        keys = found.get("_defaults", {}).get("keys", {})
        for key in (s.own_key, s.pin_key):
            keys.pop(key, None)
        await c.put(f"{base}/_defaults/schema", json={"keys": keys})


def _urls(app: FastAPI, s: Seeded) -> list[str]:
    """Every GET route of the OpenAPI document, with each value its parameters can take."""
    choices = {
        "tenant": [TENANT],
        "namespace": [s.ns, "_defaults"],
        "key": [s.defaults_key, s.own_key, s.pin_key],
        "ai_id": [str(s.ai)],
    }
    queries = {
        "explain": "explain=true",
        "at_revision": "at_revision=1",
        "from": "from=0",
        "since": "since=0",
        "max_events": "max_events=3&from_revision=0",
        "consistent": "consistent=true",
    }
    urls: list[str] = []
    for path, ops in app.openapi()["paths"].items():
        if "get" not in ops:
            continue
        names = re.findall(r"{(\w+)}", path)
        params = [q["name"] for q in ops["get"].get("parameters", []) if q["in"] == "query"]
        extra = [*(queries[p] for p in params if p in queries)]
        if "max_events" not in params:  # a stream without it never ends
            extra.append("")
        for values in itertools.product(*(choices[n] for n in names)):
            url = path
            for name, value in zip(names, values, strict=True):
                url = url.replace("{" + name + "}", value)
            urls.extend(f"{url}?{q}" if q else url for q in extra)
    return urls


async def test_no_get_route_shows_a_sensitive_value_without_secrets(app: FastAPI) -> None:
    s = await _seed(app)
    try:
        reader = await make_token(app, f"r-{s.ai}", {TENANT: ["read"]})
        admin = await make_token(app, f"a-{s.ai}", {TENANT: ["admin"]})
        seer = await make_token(app, f"s-{s.ai}", {TENANT: ["read", "secrets"]})
        urls = _urls(app, s)
        assert len(urls) > 40
        seen: set[str] = set()
        for token in (reader, admin):
            async with client(app, token) as c:
                for url in urls:
                    for attempt in range(2):  # the second read may come from the cache
                        r = await c.get(url)
                        assert r.status_code < 500, (url, r.text)
                        leaked = [x for x in s.canaries if x in r.text]
                        assert not leaked, (url, attempt, r.text)
        async with client(app, seer) as c:  # the canaries are there to be found
            for url in urls:
                text = (await c.get(url)).text
                seen.update(x for x in s.canaries if x in text)
        assert seen == set(s.canaries)
    finally:
        await _unseed(app, s)


async def test_errors_never_show_a_sensitive_value(app: FastAPI) -> None:
    s = await _seed(app)
    base = f"/api/v1/tenants/{TENANT}/namespaces/{s.ns}"
    try:
        writer = await make_token(app, f"w-{s.ai}", {TENANT: ["write"]})
        admin = await make_token(app, f"a-{s.ai}", {TENANT: ["admin"]})
        async with client(app, writer) as c:
            r = await c.post(f"{base}/keys/{s.pin_key}/rollback", json={"to_version": 1})
            assert r.status_code == 422, r.text
            assert not [x for x in s.canaries if x in r.text], r.text
        async with client(app, admin) as c:
            for spec in ({"choices": ["x"]}, {"max_length": 1}, {"type": "int"}):
                schema = {"keys": {s.own_key: {**spec, "sensitive": True}}}
                r = await c.put(f"{base}/schema", json=schema)
                assert r.status_code in (403, 422), r.text
                assert not [x for x in s.canaries if x in r.text], r.text
            # unmarking a sensitive key needs the secrets right
            schema = {"keys": {s.defaults_key: {"type": "str"}}}
            assert (await c.put(f"{base}/schema", json=schema)).status_code == 403
            assert (await c.delete(f"{base}/schema")).status_code == 403
    finally:
        await _unseed(app, s)


async def test_schema_problems_for_a_caller_with_secrets_carry_no_value(
    app: FastAPI, tenant: str
) -> None:
    base = f"/api/v1/tenants/{tenant}/namespaces/svc"
    canary = f"CANARY-{uuid.uuid4().hex}"
    async with client(app, ADMIN) as c:
        await c.put(f"{base}/keys/k", json={"value": canary})
        r = await c.put(f"{base}/schema", json={"keys": {"k": {"choices": ["x"]}}})
        assert r.status_code == 422
        assert canary not in r.text
        assert r.json()["error"]["problems"][0]["rule"] == "choices"
