"""Schema checks, pure: no Redis."""

from __future__ import annotations

import pytest

from kvconf import InvalidSchema, KeySpec, Schema, SchemaViolation
from kvconf.schema import (
    MASK,
    check_value,
    check_values,
    coerce_text,
    decode_schema_document,
    effective_specs,
    mask_value,
)


@pytest.mark.parametrize(
    ("spec", "value", "rules"),
    [
        (KeySpec(type="int"), 3, []),
        (KeySpec(type="int"), True, ["type"]),
        (KeySpec(type="int"), 3.5, ["type"]),
        (KeySpec(type="float"), 3, []),
        (KeySpec(type="float"), False, ["type"]),
        (KeySpec(type="bool"), True, []),
        (KeySpec(type="bool"), 1, ["type"]),
        (KeySpec(type="str"), None, ["type"]),
        (KeySpec(type="json"), {"any": [1]}, []),
        (KeySpec(type="int", min=1, max=10), 0, ["min"]),
        (KeySpec(type="int", min=1, max=10), 11, ["max"]),
        (KeySpec(type="str", max_length=3), "abcd", ["max_length"]),
        (KeySpec(type="json", max_length=1), [1, 2], ["max_length"]),
        (KeySpec(type="str", choices=["a", "b"]), "c", ["choices"]),
        (KeySpec(type="int", min=5, choices=[1, 2]), 3, ["min", "choices"]),
    ],
)
def test_check_value(spec: KeySpec, value: object, rules: list[str]) -> None:
    assert [p.rule for p in check_value("k", value, spec)] == rules


def test_check_values_lists_every_problem_and_ignores_unknown_keys() -> None:
    specs = {"a": KeySpec(type="int"), "b": KeySpec(type="str", max_length=1)}
    check_values(specs, {"a": 1, "zzz": object()})
    with pytest.raises(SchemaViolation) as info:
        check_values(specs, {"a": "x", "b": "long"})
    assert sorted(p.key for p in info.value.problems) == ["a", "b"]
    assert info.value.to_dict()["code"] == "schema_violation"


def test_namespace_spec_overrides_tenant_spec_per_key() -> None:
    schemas = {
        "_defaults": Schema(keys={"a": KeySpec(type="int"), "b": KeySpec(type="int")}),
        "ns": Schema(keys={"a": KeySpec(type="str")}),
    }
    merged = effective_specs(schemas, "ns")
    assert (merged["a"].type, merged["b"].type) == ("str", "int")
    assert effective_specs(schemas, "other")["a"].type == "int"
    assert effective_specs({}, "ns") == {}


@pytest.mark.parametrize(
    "document",
    [
        '{"keys": {"a": {"type": "int", "default": "x"}}}',
        '{"keys": {"a": {"type": "int", "min": 5, "max": 1}}}',
        '{"keys": {"a": {"type": "str", "choices": [1]}}}',
        '{"keys": {"bad name": {}}}',
        '{"keys": {"a": {"type": "nope"}}}',
        '{"keys": {"a": {"typo": 1}}}',
        "not json",
    ],
)
def test_invalid_schema_documents_are_refused(document: str) -> None:
    with pytest.raises(InvalidSchema):
        decode_schema_document(document)


def test_schema_document_round_trip() -> None:
    schema = decode_schema_document(
        {"keys": {"t": {"type": "int", "default": 15, "min": 1, "sensitive": True}}}
    )
    assert schema.keys["t"] == KeySpec(type="int", default=15, min=1, sensitive=True)


@pytest.mark.parametrize(
    ("text", "spec", "expected"),
    [
        ("25", KeySpec(type="int"), 25),
        ("2.5", KeySpec(type="float"), 2.5),
        ("yes", KeySpec(type="bool"), True),
        ("off", KeySpec(type="bool"), False),
        ("25", KeySpec(type="str"), "25"),
        ("[1, 2]", KeySpec(type="json"), [1, 2]),
        ("25", None, 25),
        ("plain text", None, "plain text"),
        ('{"a": 1}', None, {"a": 1}),
    ],
)
def test_coerce_text(text: str, spec: KeySpec | None, expected: object) -> None:
    assert coerce_text(text, spec) == expected


@pytest.mark.parametrize(
    ("text", "spec"),
    [("x", KeySpec(type="int")), ("maybe", KeySpec(type="bool")), ("{", KeySpec(type="json"))],
)
def test_coerce_text_refuses_wrong_type(text: str, spec: KeySpec) -> None:
    with pytest.raises(ValueError):
        coerce_text(text, spec)


def test_mask_value() -> None:
    assert mask_value("secret", KeySpec(sensitive=True)) == MASK
    assert mask_value(None, KeySpec(sensitive=True)) == MASK
    assert mask_value("plain", KeySpec()) == "plain"
    assert mask_value("plain", None) == "plain"


def test_problems_describe_the_rule_never_the_value() -> None:
    canary = "s3cr3t-PROD-KEY"
    specs = [
        KeySpec(type="str", choices=["x"]),
        KeySpec(type="str", max_length=3),
        KeySpec(type="int"),
    ]
    for spec in specs:
        problems = check_value("k", canary, spec)
        assert problems
        assert all(canary not in p.message for p in problems)
    for spec in (KeySpec(type="int", max=10), KeySpec(type="int", min=10**9)):
        assert all("123456" not in p.message for p in check_value("k", 123456, spec))


def test_coerce_text_errors_never_echo_the_text() -> None:
    canary = "s3cr3t-PROD-KEY"
    for kind in ("int", "float", "bool", "json"):
        with pytest.raises(ValueError) as info:
            coerce_text(canary, KeySpec(type=kind))  # type: ignore[arg-type]
        assert canary not in str(info.value)
