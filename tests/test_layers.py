"""Layer resolution, pure: no Redis."""

from __future__ import annotations

from kvconf import KeySpec
from kvconf.layers import effective_keys, env_name, resolve

PREFIX = "KVCONF_DEFAULT_"


def test_first_layer_wins_and_shadows_are_listed_in_order() -> None:
    specs = {"t": KeySpec(type="int", default=1)}
    result = resolve("t", {"t": 4}, {"t": 3}, {"KVCONF_DEFAULT_T": "2"}, PREFIX, specs)
    assert (result.value, result.layer) == (4, "namespace")
    assert [(s.layer, s.value) for s in result.shadowed] == [
        ("tenant_defaults", 3),
        ("environment", 2),
        ("schema_default", 1),
    ]
    assert resolve("t", {}, {"t": 3}, {}, PREFIX, specs).layer == "tenant_defaults"
    assert resolve("t", {}, {}, {"KVCONF_DEFAULT_T": "2"}, PREFIX, specs).value == 2
    assert resolve("t", {}, {}, {}, PREFIX, specs).layer == "schema_default"
    assert resolve("t", {}, {}, {}, PREFIX, {}).layer is None


def test_null_is_a_value_not_a_miss() -> None:
    result = resolve("k", {"k": None}, {"k": 1}, {}, PREFIX, {})
    assert (result.value, result.layer) == (None, "namespace")


def test_environment_names_and_types() -> None:
    assert env_name(PREFIX, "stale.time-out") == "KVCONF_DEFAULT_STALE_TIME_OUT"
    assert resolve("k", {}, {}, {"KVCONF_DEFAULT_K": "[1]"}, PREFIX, {}).value == [1]
    assert resolve("k", {}, {}, {"KVCONF_DEFAULT_K": "abc"}, PREFIX, {}).value == "abc"
    typed = {"k": KeySpec(type="str")}
    assert resolve("k", {}, {}, {"KVCONF_DEFAULT_K": "12"}, PREFIX, typed).value == "12"
    custom = resolve("k", {}, {}, {"MY_K": "7"}, "MY_", {})
    assert (custom.value, custom.layer) == (7, "environment")


def test_unparsable_environment_value_is_skipped() -> None:
    specs = {"k": KeySpec(type="int", default=5)}
    result = resolve("k", {}, {}, {"KVCONF_DEFAULT_K": "five"}, PREFIX, specs)
    assert (result.value, result.layer) == (5, "schema_default")


def test_sensitive_flag_is_carried() -> None:
    specs = {"pw": KeySpec(type="str", sensitive=True)}
    assert resolve("pw", {"pw": "x"}, {}, {}, PREFIX, specs).sensitive


def test_effective_keys_come_from_every_layer_but_the_environment() -> None:
    specs = {"d": KeySpec(default=1), "nodefault": KeySpec()}
    assert effective_keys(["a"], ["b", "a"], specs) == ["a", "b", "d"]
