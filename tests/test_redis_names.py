"""Names and Redis key layout, pure: no Redis."""

from __future__ import annotations

import pytest

from kvconf import InvalidName
from kvconf._redis.names import TenantKeys, tenant_from_key, validate_name


@pytest.mark.parametrize("name", ["a", "ai-12", "_defaults", "A.b-c_9", "x" * 128, "a."])
def test_valid_names(name: str) -> None:
    assert validate_name("key", name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("x" * 129, "longer"),
        (".hidden", "start"),
        ("a b", "only"),
        ("a/b", "only"),
        ("a{b}", "only"),
        ("a:b", "only"),
        ("ü", "only"),
        ("a*", "only"),
        (12, "string"),
        (["a"], "string"),
        (None, "string"),
    ],
)
def test_invalid_names_say_why(name: object, reason: str) -> None:
    with pytest.raises(InvalidName) as info:
        validate_name("namespace", name)
    assert reason in info.value.reason
    assert info.value.details["field"] == "namespace"


def test_every_tenant_key_shares_one_hash_tag() -> None:
    tk = TenantKeys("acme")
    names = [
        tk.rev, tk.epoch, tk.log, tk.meta, tk.namespaces, tk.schema, tk.fleet,
        tk.ns("ai-1"), tk.hist("ai-1"), tk.changes_channel,
    ]  # fmt: skip
    assert all(n.startswith("kvconf:{acme}:") for n in names)
    assert all(tenant_from_key(n) == "acme" for n in names)
    assert tenant_from_key("other:{acme}:x") is None
    assert TenantKeys("a").ns("b") != TenantKeys("a-b").ns("")
