"""History, change log, diff, rollback and the SSE watch stream over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from kvconf import Store

from .api_helpers import ADMIN, client, running_app


@pytest.fixture
async def http(backend_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(backend_url) as app, client(app) as c:
        yield c


def sse(text: str) -> list[dict[str, Any]]:
    """Parse an SSE body into events (comments dropped)."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.strip()
        if fields:
            if "data" in fields:
                fields["data"] = msgspec.json.decode(fields["data"])
            events.append(fields)
    return events


async def test_key_history_pages_and_rollback(http: httpx.AsyncClient, tenant: str) -> None:
    url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
    for i in range(5):
        await http.put(url, json={"value": i})
    page = (await http.get(url + "/history", params={"limit": 2})).json()
    assert [v["version"] for v in page["versions"]] == [5, 4]
    page2 = (await http.get(url + "/history", params={"limit": 2, "before": 4})).json()
    assert [v["version"] for v in page2["versions"]] == [3, 2]
    r = await http.post(url + "/rollback", json={"to_version": 2, "reason": "oops"})
    assert r.status_code == 200
    assert r.headers["etag"] == '"6"'
    got = (await http.get(url)).json()
    assert got["value"] == 1
    assert got["version"] == 6
    r = await http.post(url + "/rollback", json={"to_version": 99})
    assert r.status_code == 404
    r = await http.post(url + "/rollback", json={"to_version": 1, "expect_version": 3})
    assert r.status_code == 409


async def test_log_diff_and_tenant_rollback(http: httpx.AsyncClient, tenant: str) -> None:
    t = f"/api/v1/tenants/{tenant}"
    await http.post(f"{t}/namespaces/a", json={"values": {"x": 1, "y": 2}})  # r1
    await http.post(f"{t}/namespaces/a", json={"values": {"x": 3}, "deletes": ["y"]})  # r2
    await http.post(f"{t}/namespaces/b", json={"values": {"z": 1}})  # r3
    log = (await http.get(f"{t}/log", params={"since": 1})).json()["events"]
    assert [e["revision"] for e in log] == [2, 3]
    d = (await http.get(f"{t}/diff", params={"from": 1})).json()
    assert [(c["namespace"], c["key"], c["change"]) for c in d["changes"]] == [
        ("a", "x", "changed"),
        ("a", "y", "removed"),
        ("b", "z", "added"),
    ]
    nd = (await http.get(f"{t}/namespaces/a/diff", params={"from": 1, "to": 2})).json()
    assert len(nd["changes"]) == 2
    past = (await http.get(f"{t}/namespaces/a", params={"at_revision": 1})).json()
    assert {k: v["value"] for k, v in past["keys"].items()} == {"x": 1, "y": 2}
    r = await http.post(
        f"{t}/rollback", json={"to_revision": 1, "namespace": "a"}, headers={"X-Change-Reason": "r"}
    )
    assert r.status_code == 200
    assert [c["revision"] for c in r.json()["commits"]] == [4]
    r = await http.post(f"{t}/rollback", json={"to_revision": 1})
    assert [c["namespace"] for c in r.json()["commits"]] == ["b"]
    state = (await http.get(f"{t}/namespaces/a")).json()["keys"]
    assert {k: v["value"] for k, v in state.items()} == {"x": 1, "y": 2}
    assert (await http.get(f"{t}/diff", params={"from": 99})).status_code == 422
    assert (await http.get(f"{t}/diff", params={"from": -1})).status_code == 422


async def test_watch_replays_and_resumes(http: httpx.AsyncClient, tenant: str) -> None:
    url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
    for i in range(3):
        await http.put(url, json={"value": i})
    watch = f"/api/v1/tenants/{tenant}/watch"
    r = await http.get(watch, params={"from_revision": 0, "max_events": 3})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert [e["id"] for e in events] == ["1", "2", "3"]
    assert events[0]["event"] == "change"
    assert events[2]["data"]["changes"][0]["value"] == 2
    r = await http.get(watch, params={"max_events": 1}, headers={"Last-Event-ID": "1"})
    assert sse(r.text)[0]["id"] == "2"


async def test_watch_delivers_live_events(http: httpx.AsyncClient, tenant: str) -> None:
    url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
    await http.put(url, json={"value": 0})
    watch = f"/api/v1/tenants/{tenant}/watch"
    task = asyncio.create_task(http.get(watch, params={"max_events": 2}))
    await asyncio.sleep(0.3)
    await http.put(url, json={"value": 1})
    await http.put(url, json={"value": 2})
    r = await asyncio.wait_for(task, 10)
    assert [e["data"]["changes"][0]["value"] for e in sse(r.text)] == [1, 2]


async def test_watch_resets_when_log_trimmed(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, log_limit=2) as app, client(app) as http:
        url = f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k"
        for i in range(5):
            await http.put(url, json={"value": i})
        r = await http.get(
            f"/api/v1/tenants/{tenant}/watch", params={"from_revision": 1, "max_events": 1}
        )
        event = sse(r.text)[0]
        assert event["event"] == "reset"
        assert event["id"] == "5"
        r = await http.get(f"/api/v1/tenants/{tenant}/log", params={"since": 1})
        assert r.status_code == 410
        bad = await http.get(f"/api/v1/tenants/{tenant}/watch", headers={"Last-Event-ID": "x"})
        assert bad.status_code == 422
        fleet = (await http.get(f"/api/v1/tenants/{tenant}/fleet")).json()
        assert isinstance(fleet["watchers"], list)


async def test_fleet_lists_reporting_watchers(http: httpx.AsyncClient, tenant: str) -> None:
    import time

    fleet = pytest.importorskip("kvconf._watch.fleet")
    from kvconf.store import tenant_keys

    await http.put(f"/api/v1/tenants/{tenant}/namespaces/svc/keys/k", json={"value": 1})
    member = fleet.FleetMember(
        instance="web-1", host="web", pid=42, revision=1, epoch="e", stale=False,
        reported_at=time.time(),
    )  # fmt: skip
    store = http._transport.app.state.store  # type: ignore[attr-defined]
    await store.redis.hset(tenant_keys(tenant).fleet, "web-1", fleet.encode_member(member))
    watchers = (await http.get(f"/api/v1/tenants/{tenant}/fleet")).json()["watchers"]
    assert [(w["instance"], w["revision"]) for w in watchers] == [("web-1", 1)]
    assert (await http.get(f"/api/v1/tenants/{tenant}-none/fleet")).status_code == 404


async def test_dry_runs_of_rollbacks_write_nothing(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        base = f"/api/v1/tenants/{tenant}"
        for value in (1, 2, 3):
            r = await c.put(f"{base}/namespaces/ns/keys/k", json={"value": value})
            assert r.status_code in (200, 201)
        await c.put(f"{base}/namespaces/ns/keys/other", json={"value": "x"})
        key_dry = await c.post(
            f"{base}/namespaces/ns/keys/k/rollback",
            params={"dry_run": "true"},
            json={"to_version": 1},
        )
        assert key_dry.status_code == 200, key_dry.text
        assert key_dry.json()["changes"] == [
            {"key": "k", "change": "changed", "old": 3, "old_version": 3, "new": 1}
        ]
        tenant_dry = await c.post(
            f"{base}/rollback", params={"dry_run": "true"}, json={"to_revision": 1}
        )
        assert tenant_dry.status_code == 200, tenant_dry.text
        doc = tenant_dry.json()
        assert (doc["dry_run"], doc["would_commit"]) == (True, True)
        changes = {c["key"]: c["change"] for c in doc["namespaces"][0]["changes"]}
        assert changes == {"k": "changed", "other": "removed"}
        state = (await c.get(f"{base}/namespaces/ns")).json()
        assert state["revision"] == 4
        assert {k: v["value"] for k, v in state["keys"].items()} == {"k": 3, "other": "x"}


async def test_mutating_routes_refuse_unknown_query_parameters(
    backend_url: str, tenant: str
) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        base = f"/api/v1/tenants/{tenant}/namespaces/ns"
        await c.put(f"{base}/keys/k", json={"value": 1})
        await c.put(f"{base}/keys/k", json={"value": 2})
        r = await c.post(f"{base}/keys/k/rollback", params={"dryrun": "1"}, json={"to_version": 1})
        assert r.status_code == 422
        assert r.json()["error"]["unknown"] == ["dryrun"]
        r = await c.put(f"{base}/keys/k", params={"dry-run": "true"}, json={"value": 5})
        assert r.status_code == 422
        r = await c.delete(f"{base}/keys/k", params={"force": "yes"})
        assert r.status_code == 422
        assert (await c.get(f"{base}/keys/k")).json()["value"] == 2
        # Reads may carry parameters they do not know (caches, cache-busters).
        assert (await c.get(f"{base}/keys/k", params={"_": "1"})).status_code == 200


async def test_the_change_log_keeps_the_request_id(backend_url: str, tenant: str) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        url = f"/api/v1/tenants/{tenant}/namespaces/ns/keys/k"
        r = await c.put(url, json={"value": 1}, headers={"X-Request-ID": "rid-trace.1"})
        assert r.headers["x-request-id"] == "rid-trace.1"
        await c.put(url, json={"value": 2})  # a generated id
        log = (await c.get(f"/api/v1/tenants/{tenant}/log", params={"since": 0})).json()
        ids = [e["request_id"] for e in log["events"]]
        assert ids[0] == "rid-trace.1"
        assert ids[1] not in ("", "rid-trace.1")
    # A write made outside the API carries none.
    store = Store(backend_url, environ={})
    try:
        await store.set(tenant, "ns", "k", 3)
        (event,) = await store.changes_since(tenant, 2)
        assert event.request_id == ""
    finally:
        await store.aclose()
