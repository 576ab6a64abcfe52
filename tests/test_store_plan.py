"""The change-set validation plan: pure checks, and the dry run agreeing with the write."""

from __future__ import annotations

from typing import Any

import pytest

from kvconf._redis.names import TenantKeys
from kvconf._store.plan import plan_across, plan_change
from kvconf.exceptions import EmptyChangeSet, InvalidInput, InvalidName, ValueTooLarge

from .api_helpers import ADMIN, client, running_app

TK = TenantKeys("acme")


def _plan(values: dict[str, Any], deletes: list[str] = (), expect: Any = None, **kw: Any) -> Any:  # type: ignore[assignment]
    return plan_change(
        TK, "ai-12", values, list(deletes), expect or {},
        max_keys=kw.get("max_keys", 2), max_value_bytes=kw.get("max_value_bytes", 64),
    )  # fmt: skip


def test_plan_builds_ops_and_declared_keys() -> None:
    plan = _plan({"a": 1}, ["b"], {"a": 3})
    assert plan.ops == [("a", "s3", b"1"), ("b", "d-1", b"")]
    assert plan.keys == [TK.ns("ai-12"), TK.hist("ai-12")]
    assert plan.namespace == "ai-12"


@pytest.mark.parametrize(
    ("values", "deletes", "expect", "error"),
    [
        ({}, [], {}, EmptyChangeSet),
        ({"a": 1, "b": 2, "c": 3}, [], {}, InvalidInput),  # over the 2-key limit
        ({"a": 1}, ["a"], {}, InvalidInput),  # set and deleted
        ({"bad name": 1}, [], {}, InvalidName),
        ({"a": "x" * 100}, [], {}, ValueTooLarge),
        ({"a": 1}, [], {"b": 1}, InvalidInput),  # expectation outside the set
        ({"a": 1}, [], {"a": -2}, InvalidInput),
    ],
)
def test_plan_refuses(values: Any, deletes: Any, expect: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        _plan(values, deletes, expect)


def test_plan_across_names_keys_by_namespace() -> None:
    plan = plan_across(TK, {"n1": {"a": 1}}, {"n2": ["b"]}, {}, max_keys=10, max_value_bytes=64)
    assert plan.namespace == "*"
    assert [op[0] for op in plan.ops] == ["n1/a", "n2/b"]
    with pytest.raises(InvalidInput):
        plan_across(TK, {"n1": {"a": 1}}, {}, {"n9": {"a": 1}}, max_keys=10, max_value_bytes=64)


REFUSED: list[dict[str, Any]] = [
    {"values": {"a": 1, "b": 2, "c": 3}},  # over the 2-key limit
    {"values": {"a": 1}, "deletes": ["a"]},  # set and deleted
    {"values": {}, "deletes": []},
    {"values": {"bad name": 1}},
    {"values": {"a": "x" * 200}},
    {"values": {"a": 1}, "expect": {"zz": 1}},
    {"values": {"port": "eighty"}},  # schema: an int
    {"values": {"a": 1}, "deletes": ["never-written"]},
    {"values": {"a": 1}, "reason": "r" * 2000},  # an audit field over its limit
]


@pytest.mark.parametrize("body", REFUSED)
async def test_dry_run_refuses_what_the_write_refuses(
    backend_url: str, tenant: str, body: dict[str, Any]
) -> None:
    async with (
        running_app(
            backend_url, admin_token=ADMIN, max_keys_per_write=2, max_value_bytes=128
        ) as app,
        client(app, ADMIN) as c,
    ):
        base = f"/api/v1/tenants/{tenant}/namespaces/ai-12"
        r = await c.put(
            f"/api/v1/tenants/{tenant}/namespaces/ai-12/schema",
            json={"keys": {"port": {"type": "int"}}},
        )
        assert r.status_code in (200, 201), r.text
        dry = await c.post(base, params={"dry_run": "true"}, json=body)
        real = await c.post(base, json=body)
        assert dry.status_code == real.status_code, (dry.text, real.text)
        assert 400 <= real.status_code < 500, real.text
        assert dry.json() == real.json()
        state = await c.get(base)
        assert state.json()["keys"] == {}  # nothing was written by either


async def test_a_dry_run_on_a_new_tenant_previews_its_creation(
    backend_url: str, tenant: str
) -> None:
    async with running_app(backend_url, admin_token=ADMIN) as app, client(app, ADMIN) as c:
        url = f"/api/v1/tenants/{tenant}/namespaces/ai-12/keys/k"
        dry = await c.put(url, params={"dry_run": "true"}, json={"value": 1})
        assert dry.status_code == 200, dry.text
        assert dry.json()["changes"][0]["change"] == "added"
        assert (await c.get(f"/api/v1/tenants/{tenant}")).status_code == 404  # not created
        assert (await c.put(url, json={"value": 1})).status_code == 201


async def test_check_reads_the_schema_afresh(make_store: Any, tenant: str) -> None:
    from kvconf import KeySpec, Schema, SchemaViolation

    mine, other = make_store(), make_store()
    await mine.set(tenant, "ns", "seed", 1)
    await mine.check(tenant, "ns", {"port": "x"})  # no schema yet: fine, and now cached
    await other.set_schema(tenant, "ns", Schema(keys={"port": KeySpec(type="int")}))
    with pytest.raises(SchemaViolation):
        await mine.check(tenant, "ns", {"port": "x"})
