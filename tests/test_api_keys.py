"""Namespaces and keys over HTTP: ETag/If-Match, change sets, effective, dry runs, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from .api_helpers import ADMIN, client, running_app


@pytest.fixture
async def http(backend_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(backend_url, max_body_bytes=4096) as app, client(app) as c:
        yield c


def key_url(tenant: str, key: str = "k", ns: str = "svc") -> str:
    return f"/api/v1/tenants/{tenant}/namespaces/{ns}/keys/{key}"


async def test_put_get_etag_and_metadata(http: httpx.AsyncClient, tenant: str) -> None:
    r = await http.put(key_url(tenant), json={"value": {"a": [1, 2]}, "reason": "first"})
    assert r.status_code == 201
    assert r.headers["etag"] == '"1"'
    r = await http.put(key_url(tenant), json={"value": 2}, headers={"X-Change-Reason": "bump"})
    assert r.status_code == 200
    assert r.headers["etag"] == '"2"'
    r = await http.get(key_url(tenant))
    body = r.json()
    assert r.headers["etag"] == '"2"'
    assert body["value"] == 2
    assert body["version"] == 2
    assert body["revision"] == 2
    assert body["updated_by"] == "anonymous@127.0.0.1"
    hist = (await http.get(key_url(tenant) + "/history")).json()["versions"]
    assert [v["reason"] for v in hist] == ["bump", "first"]
    ns = (await http.get(f"/api/v1/tenants/{tenant}/namespaces/svc")).json()
    assert ns["keys"]["k"]["version"] == 2
    assert ns["revision"] == 2
    names = (await http.get(f"/api/v1/tenants/{tenant}/namespaces")).json()["namespaces"]
    assert names == ["svc"]


async def test_if_match_mismatch_is_412_with_current_version(
    http: httpx.AsyncClient, tenant: str
) -> None:
    await http.put(key_url(tenant), json={"value": 1})
    await http.put(key_url(tenant), json={"value": 2})
    r = await http.put(key_url(tenant), json={"value": 3}, headers={"If-Match": '"1"'})
    assert r.status_code == 412
    assert r.headers["etag"] == '"2"'
    assert r.json()["error"]["current_version"] == 2
    r = await http.put(key_url(tenant), json={"value": 3}, headers={"If-Match": '"2"'})
    assert r.status_code == 200
    assert r.headers["etag"] == '"3"'
    r = await http.put(key_url(tenant), json={"value": 4}, headers={"If-Match": "*"})
    assert r.status_code == 200
    r = await http.delete(key_url(tenant), headers={"If-Match": '"1"'})
    assert r.status_code == 412
    r = await http.put(key_url(tenant), json={"value": 1}, headers={"If-Match": "nope"})
    assert r.status_code == 422


async def test_if_none_match_star_creates_only(http: httpx.AsyncClient, tenant: str) -> None:
    h = {"If-None-Match": "*"}
    assert (await http.put(key_url(tenant), json={"value": 1}, headers=h)).status_code == 201
    r = await http.put(key_url(tenant), json={"value": 2}, headers=h)
    assert r.status_code == 412
    assert r.json()["error"]["current_version"] == 1


async def test_change_set_is_atomic_and_body_expectations_409(
    http: httpx.AsyncClient, tenant: str
) -> None:
    url = f"/api/v1/tenants/{tenant}/namespaces/svc"
    r = await http.post(url, json={"values": {"a": 1, "b": 2, "c": 3}})
    assert r.status_code == 200
    assert r.json()["revision"] == 1
    r = await http.post(url, json={"values": {"a": 10}, "deletes": ["c"], "expect": {"a": 5}})
    assert r.status_code == 409
    assert r.json()["error"]["conflicts"] == [{"key": "a", "expected": 5, "actual": 1}]
    r = await http.post(url, json={"values": {"a": 10}, "deletes": ["c"], "expect": {"a": 1}})
    assert r.status_code == 200
    assert r.json()["revision"] == 2
    keys = (await http.get(url)).json()["keys"]
    assert {k: v["value"] for k, v in keys.items()} == {"a": 10, "b": 2}
    assert (await http.delete(key_url(tenant, "c"))).status_code == 404
    assert (await http.delete(key_url(tenant, "b"))).status_code == 200
    assert (await http.get(key_url(tenant, "b"))).status_code == 404


async def test_effective_with_explain(
    http: httpx.AsyncClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = {"keys": {"timeout": {"type": "int", "default": 5}}}
    assert (
        await http.put(f"/api/v1/tenants/{tenant}/namespaces/_defaults/schema", json=schema)
    ).status_code == 404 or True
    await http.put(key_url(tenant, "x", "_defaults"), json={"value": 1})
    r = await http.put(f"/api/v1/tenants/{tenant}/namespaces/_defaults/schema", json=schema)
    assert r.status_code == 200
    await http.put(key_url(tenant, "x"), json={"value": 2})
    base = f"/api/v1/tenants/{tenant}/namespaces/svc/effective"
    assert (await http.get(base)).json()["values"] == {"timeout": 5, "x": 2}
    keys = (await http.get(base, params={"explain": "true"})).json()["keys"]
    assert keys["x"]["layer"] == "namespace"
    assert keys["x"]["shadowed"] == [{"layer": "tenant_defaults", "value": 1}]
    assert keys["timeout"]["layer"] == "schema_default"


async def test_schema_violation_lists_every_problem(http: httpx.AsyncClient, tenant: str) -> None:
    await http.put(key_url(tenant, "seed"), json={"value": 0})
    schema = {"keys": {"a": {"type": "int", "min": 1}, "b": {"type": "str"}}}
    r = await http.put(f"/api/v1/tenants/{tenant}/namespaces/svc/schema", json=schema)
    assert r.status_code == 200
    got = (await http.get(f"/api/v1/tenants/{tenant}/namespaces/svc/schema")).json()
    assert got["keys"]["a"]["type"] == "int"
    r = await http.post(
        f"/api/v1/tenants/{tenant}/namespaces/svc", json={"values": {"a": 0, "b": 3}}
    )
    assert r.status_code == 422
    problems = r.json()["error"]["problems"]
    assert {p["key"] for p in problems} == {"a", "b"}
    bad = {"keys": {"a": {"type": "int", "min": 5, "max": 1}}}
    r = await http.put(f"/api/v1/tenants/{tenant}/namespaces/svc/schema", json=bad)
    assert r.status_code == 422
    all_schemas = (await http.get(f"/api/v1/tenants/{tenant}/schemas")).json()["schemas"]
    assert "svc" in all_schemas
    assert (await http.delete(f"/api/v1/tenants/{tenant}/namespaces/svc/schema")).status_code == 200
    assert (await http.get(f"/api/v1/tenants/{tenant}/namespaces/svc/schema")).status_code == 404


async def test_dry_run_returns_diff_without_committing(
    http: httpx.AsyncClient, tenant: str
) -> None:
    url = f"/api/v1/tenants/{tenant}/namespaces/svc"
    await http.post(url, json={"values": {"a": 1, "b": 2}})
    r = await http.post(
        url,
        params={"dry_run": "true"},
        json={"values": {"a": 1, "c": 3}, "deletes": ["b"], "expect": {"a": 9}},
    )
    assert r.status_code == 200
    out = r.json()
    assert out["would_commit"] is False
    assert out["conflicts"][0]["actual"] == 1
    assert {c["key"]: c["change"] for c in out["changes"]} == {
        "a": "unchanged",
        "c": "added",
        "b": "removed",
    }
    r = await http.put(key_url(tenant, "a"), params={"dry_run": "true"}, json={"value": 5})
    assert r.json()["changes"][0]["change"] == "changed"
    assert (await http.get(url)).json()["revision"] == 1


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/tenants/bad%20name/namespaces/svc/keys/k", "tenant"),
        ("/api/v1/tenants/{t}/namespaces/.hidden/keys/k", "namespace"),
        ("/api/v1/tenants/{t}/namespaces/svc/keys/{long}", "key"),
    ],
)
async def test_bad_names_are_422_naming_the_field(
    http: httpx.AsyncClient, tenant: str, path: str, field: str
) -> None:
    r = await http.put(path.format(t=tenant, long="k" * 200), json={"value": 1})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field


async def test_unknown_things_are_404(http: httpx.AsyncClient, tenant: str) -> None:
    assert (await http.get(key_url(tenant))).status_code == 404
    await http.put(key_url(tenant, "other"), json={"value": 1})
    r = await http.get(key_url(tenant))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "key_not_found"
    assert (await http.get("/api/v1/tenants/nope-nope-nope")).status_code == 404
    assert (await http.get("/no/such/route")).status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b'{"value": 1, "extra": 2}', b'{"reason": "no value"}'],
)
async def test_malformed_bodies_are_422(http: httpx.AsyncClient, tenant: str, body: bytes) -> None:
    r = await http.put(key_url(tenant), content=body)
    assert r.status_code == 422


async def test_body_limit_413_declared_and_chunked(http: httpx.AsyncClient, tenant: str) -> None:
    big = b'{"value": "' + b"x" * 10_000 + b'"}'
    r = await http.put(key_url(tenant), content=big)
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = await http.put(key_url(tenant), content=chunks())
    assert r.status_code == 413
    r = await http.put("/api/v1/config/1", content=big)
    assert r.status_code == 413
    assert r.json()["success"] is False


async def test_tenant_lifecycle(http: httpx.AsyncClient, tenant: str) -> None:
    r = await http.post("/api/v1/tenants", json={"name": tenant})
    assert r.status_code == 201
    assert (await http.post("/api/v1/tenants", json={"name": tenant})).status_code == 409
    assert tenant in (await http.get("/api/v1/tenants")).json()["tenants"]
    await http.put(key_url(tenant, "a", "_defaults"), json={"value": 1})
    await http.put(key_url(tenant, "b"), json={"value": 2})
    copy, clone = f"{tenant}-tpl", f"{tenant}-cl"
    r = await http.post(
        "/api/v1/tenants",
        json={"name": copy, "template": tenant, "overrides": {"svc": {"z": 26}}},
    )
    assert r.status_code == 201
    assert (await http.get(key_url(copy, "a", "_defaults"))).json()["value"] == 1
    assert (await http.get(key_url(copy, "b"))).status_code == 404
    assert (await http.get(key_url(copy, "z"))).json()["value"] == 26
    r = await http.post("/api/v1/tenants", json={"name": clone, "clone_from": tenant})
    assert r.status_code == 201
    assert (await http.get(key_url(clone, "b"))).json()["value"] == 2
    info = (await http.get(f"/api/v1/tenants/{tenant}")).json()
    assert info["revision"] == 3  # creation (1) and two writes
    assert (await http.delete(f"/api/v1/tenants/{tenant}")).status_code == 200
    assert (await http.get(key_url(tenant, "b"))).status_code == 404
    assert (await http.post(f"/api/v1/tenants/{tenant}/undelete")).status_code == 200
    assert (await http.get(key_url(tenant, "b"))).json()["value"] == 2
    for name in (tenant, copy, clone):
        r = await http.delete(f"/api/v1/tenants/{name}", params={"hard": "true"})
        assert r.status_code == 200, r.text
    assert (await http.get(f"/api/v1/tenants/{copy}")).status_code == 404


async def test_if_match_star_never_refuses_an_existing_key_under_concurrency(
    backend_url: str, tenant: str
) -> None:
    # "If-Match: *" is one condition of the write script: no read, no race.
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        url = f"/api/v1/tenants/{tenant}/namespaces/ns/keys/k"
        assert (await c.put(url, json={"value": 0})).status_code == 201
        replies: list[httpx.Response] = []
        for _ in range(4):  # 50 at once: within the store's connection pool
            replies += await asyncio.gather(
                *(c.put(url, json={"value": i}, headers={"If-Match": "*"}) for i in range(50))
            )
        bad = [r.text for r in replies if r.status_code != 200]
        assert bad == []
        assert (await c.get(url)).json()["version"] == 201
        missing = await c.put(url + "-missing", json={"value": 1}, headers={"If-Match": "*"})
        assert missing.status_code == 412
        assert missing.json()["error"]["code"] == "precondition_failed"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [65, 10_000, 100_000])
async def test_deeply_nested_bodies_are_422_naming_the_field(
    backend_url: str, tenant: str, depth: int
) -> None:
    deep = _nested(depth)
    bodies = [
        ("PUT", key_url(tenant), '{"value": ' + deep + "}", "value"),
        ("POST", f"/api/v1/tenants/{tenant}/namespaces/svc", '{"values": {"k": ' + deep + "}}",
         "values.k"),
        ("PUT", f"/api/v1/tenants/{tenant}/namespaces/svc/schema",
         '{"keys": {"k": {"default": ' + deep + "}}}", "keys.k.default"),
        ("POST", "/api/v1/tenants", '{"name": "' + tenant + '-x", "overrides": {"svc": {"k": '
         + deep + "}}}", "overrides.svc.k"),
    ]  # fmt: skip
    async with running_app(backend_url) as app, client(app) as http:
        await http.put(key_url(tenant), json={"value": 1})
        for method, url, body, field in bodies:
            r = await http.request(
                method, url, content=body, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, (url, r.text)
            error = r.json()["error"]
            assert "64 levels" in error["message"], error
            if depth > 1000:  # the decoder's own limit: the field comes from the scan
                assert field in (error.get("field"), error.get("key")), error
        r = await http.get(key_url(tenant))
        assert r.json()["value"] == 1
        assert (await http.get(f"/api/v1/tenants/{tenant}-x")).status_code == 404


async def test_nesting_limit_is_exactly_64_levels(store, tenant: str) -> None:  # type: ignore[no-untyped-def]
    from kvconf.exceptions import InvalidValue

    ok: object = 1
    for _ in range(64):
        ok = [ok]
    await store.set(tenant, "svc", "k", ok)
    with pytest.raises(InvalidValue):
        await store.set(tenant, "svc", "k", [ok])


async def test_tenant_from_template_is_all_or_nothing(http: httpx.AsyncClient, tenant: str) -> None:
    schema = {"keys": {"port": {"type": "int", "max": 100}}}
    r = await http.put(f"/api/v1/tenants/{tenant}/namespaces/_defaults/schema", json=schema)
    assert r.status_code == 200, r.text
    await http.put(key_url(tenant, "port", "_defaults"), json={"value": 80})
    copy = f"{tenant}-tpl"
    bad = [
        {"svc": {"port": 1000}},  # breaks the template's schema
        {"svc": {"port": 1, "bad name": 2}},  # an invalid key name
        {"svc": 5},  # not an object
        {"svc": {"port": "x" * 5000}},  # over the value size limit
    ]
    for overrides in bad:
        body = {"name": copy, "template": tenant, "overrides": overrides}
        r = await http.post("/api/v1/tenants", json=body)
        assert r.status_code in (413, 422), r.text
        assert (await http.get(f"/api/v1/tenants/{copy}")).status_code == 404, overrides
    r = await http.post(
        "/api/v1/tenants",
        json={"name": copy, "template": tenant, "overrides": {"svc": {"port": 9}}},
    )
    assert r.status_code == 201, r.text
    assert (await http.get(key_url(copy, "port"))).json()["value"] == 9


async def test_tenant_lifecycle_is_audited_with_actor_and_reason(
    http: httpx.AsyncClient, tenant: str
) -> None:
    await http.put(key_url(tenant), json={"value": 1})
    clone = f"{tenant}-cl"
    r = await http.post(
        "/api/v1/tenants", json={"name": clone, "clone_from": tenant, "reason": "staging copy"}
    )
    assert r.status_code == 201
    headers = {"X-Change-Reason": "retire"}
    assert (await http.delete(f"/api/v1/tenants/{clone}", headers=headers)).status_code == 200
    assert (await http.post(f"/api/v1/tenants/{clone}/undelete")).status_code == 200
    events = (await http.get(f"/api/v1/tenants/{clone}/log")).json()["events"]
    ops = [(e["type"], e["op"], e["reason"]) for e in events if e["type"] == "tenant"]
    assert ops == [
        ("tenant", "clone", "staging copy"),
        ("tenant", "soft_delete", "retire"),
        ("tenant", "undelete", ""),
    ]
    assert all(e["actor"].endswith("@127.0.0.1") for e in events)
    for name in (tenant, clone):
        await http.delete(f"/api/v1/tenants/{name}", params={"hard": "true"})


async def test_tenant_list_can_include_soft_deleted_tenants(
    http: httpx.AsyncClient, tenant: str
) -> None:
    await http.put(key_url(tenant), json={"value": 1})
    assert tenant in (await http.get("/api/v1/tenants")).json()["tenants"]
    assert (await http.delete(f"/api/v1/tenants/{tenant}")).status_code == 200
    plain = (await http.get("/api/v1/tenants")).json()
    assert tenant not in plain["tenants"]
    assert "deleted" not in plain
    full = (await http.get("/api/v1/tenants", params={"include_deleted": "true"})).json()
    assert tenant in full["deleted"]
    assert tenant not in full["tenants"]


async def test_change_set_across_namespaces_is_one_revision(
    http: httpx.AsyncClient, tenant: str
) -> None:
    url = f"/api/v1/tenants/{tenant}/changes"
    r = await http.post(url, json={"values": {"svc": {"a": 1, "b": 2}, "web": {"c": 3}}})
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 1
    assert r.json()["versions"] == {"svc/a": 1, "svc/b": 1, "web/c": 1}
    body = {"values": {"svc": {"a": 10}}, "deletes": {"web": ["c"]},
            "expect": {"svc": {"a": 1}, "web": {"c": 1}}, "reason": "move"}  # fmt: skip
    r = await http.post(url, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["versions"] == {"svc/a": 2, "web/c": 2}
    (event,) = (await http.get(f"/api/v1/tenants/{tenant}/log", params={"since": 1})).json()[
        "events"
    ]
    assert (event["namespace"], event["revision"], event["reason"]) == ("*", 2, "move")
    assert [(ch["namespace"], ch["key"]) for ch in event["changes"]] == [("svc", "a"), ("web", "c")]
    r = await http.post(url, json={"values": {"svc": {"a": 11}, "web": {"d": 1}},
                                   "expect": {"svc": {"a": 1}}})  # fmt: skip
    assert r.status_code == 409
    assert r.json()["error"]["conflicts"] == [{"key": "svc/a", "expected": 1, "actual": 2}]
    assert (await http.get(key_url(tenant, "d", "web"))).status_code == 404  # all or nothing
    r = await http.post(f"/api/v1/tenants/{tenant}-new/changes",
                        json={"values": {"svc": {"a": 1}}, "create": False})  # fmt: skip
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "tenant_not_found"
    assert (await http.get(f"/api/v1/tenants/{tenant}-new")).status_code == 404


async def test_change_set_across_dry_run_refuses_what_the_write_refuses(
    http: httpx.AsyncClient, tenant: str
) -> None:
    url = f"/api/v1/tenants/{tenant}/changes"
    assert (await http.post(url, json={"values": {"svc": {"a": 1}, "web": {"c": 3}}})).is_success
    schema = {"keys": {"a": {"type": "int", "min": 1}}}
    assert (
        await http.put(f"/api/v1/tenants/{tenant}/namespaces/svc/schema", json=schema)
    ).is_success
    cases: list[dict[str, object]] = [
        {"values": {"svc": {"a": 0}, "web": {"x": 1}}},  # schema
        {"values": {"web": {"x": 1}}, "deletes": {"svc": ["nope"]}},  # missing key
        {"values": {"web": {"x": 1}}, "expect": {"other": {"k": 1}}},  # expect off the set
        {"values": {".bad": {"x": 1}}},  # namespace name
        {"values": {"svc": {}}},  # empty
        {"values": {"svc": {"a": 2}}, "deletes": {"svc": ["a"]}},  # set and delete one key
        {"values": {"svc": {"a": 2}}, "reason": "r" * 2000},  # audit field size
        {"values": {"svc": {"a": 2}}, "unknown": 1},  # body schema
        {"values": {"svc": {"a": 2}}, "expect": {"svc": {"a": 7}}},  # conflict
        # a conflict beside a missing key: the write reports the conflict first
        {"values": {"svc": {"a": 2}}, "deletes": {"web": ["nope"]}, "expect": {"svc": {"a": 7}}},
        {"values": {"svc": {"a": 2}}, "deletes": {"web": ["c"]}, "expect": {"web": {"c": 1}}},
    ]
    for body in cases:
        before = (await http.get(f"/api/v1/tenants/{tenant}")).json()["revision"]
        dry = await http.post(url, params={"dry_run": "true"}, json=body)
        assert (await http.get(f"/api/v1/tenants/{tenant}")).json()["revision"] == before
        real = await http.post(url, json=body)
        if dry.status_code != 200:
            assert real.status_code == dry.status_code, (body, dry.text, real.text)
            assert real.json() == dry.json(), body
            continue
        preview = dry.json()
        assert preview["revision"] == before
        conflicts = [
            {**c, "key": f"{ns['namespace']}/{c['key']}"}
            for ns in preview["namespaces"]
            for c in ns["conflicts"]
        ]
        if preview["would_commit"]:
            assert real.status_code == 200, (body, real.text)
        else:
            assert real.status_code == 409, (body, real.text)
            assert real.json()["error"]["conflicts"] == conflicts
    assert {c["key"]: c["change"] for c in preview["namespaces"][1]["changes"]} == {"c": "removed"}
