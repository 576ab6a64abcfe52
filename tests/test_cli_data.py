"""The data commands of the CLI, in-process, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvconf.cli import app

runner = CliRunner()


@pytest.fixture
def kv(backend_url: str) -> object:
    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> str:
        result = runner.invoke(app, [*args, "--redis-url", backend_url], input=stdin)
        assert result.exit_code == code, (result.output, result.exception)
        return result.output

    return invoke


def test_set_get_history_rollback_delete(kv, tenant: str) -> None:  # type: ignore[no-untyped-def]
    assert "revision 1" in kv("set", tenant, "ai-1", "timeout:=30", 'hosts:=["a"]', "--reason", "x")
    kv("set", tenant, "ai-1", "timeout:=45")
    rows = json.loads(kv("get", tenant, "ai-1", "--json"))
    assert [(r["key"], r["value"], r["version"]) for r in rows] == [
        ("hosts", ["a"], 1),
        ("timeout", 45, 2),
    ]
    one = json.loads(kv("get", tenant, "ai-1", "timeout", "--json"))
    assert (one["value"], one["revision"]) == (45, 2)
    history = json.loads(kv("history", tenant, "ai-1", "timeout", "--json"))
    assert [v["value"] for v in history] == [45, 30]
    kv("rollback", tenant, "ai-1", "timeout", "1")
    assert json.loads(kv("get", tenant, "ai-1", "timeout", "--json"))["value"] == 30
    kv("delete", tenant, "ai-1", "hosts")
    kv("get", tenant, "ai-1", "hosts", code=3)
    assert tenant in json.loads(kv("tenants", "--json"))
    assert json.loads(kv("tenants", tenant, "--json"))["revision"] == 4


def test_exit_codes_distinguish_failures(kv, tenant: str) -> None:  # type: ignore[no-untyped-def]
    kv("get", tenant, "ns", code=3)
    kv("set", tenant, "ns", "k=1")
    out = kv("set", tenant, "ns", "k=2", "--expect-version", "0", "--json", code=4)
    assert json.loads(out)["error"]["code"] == "version_conflict"
    kv("set", tenant, "ns", "bad key=1", code=5)
    kv("set", tenant, "ns", "novalue", code=5)


def test_schema_types_cli_values_and_masks_secrets(  # type: ignore[no-untyped-def]
    kv, tenant: str, tmp_path: Path
) -> None:
    kv("set", tenant, "ns", "other=1")
    schema = {"keys": {"port": {"type": "str"}, "pw": {"type": "str", "sensitive": True}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    kv("schema", tenant, "ns", "--set", str(path))
    assert json.loads(kv("schema", tenant, "ns"))["keys"]["pw"]["sensitive"] is True
    kv("set", tenant, "ns", "port=8080", "pw=hunter2")
    rows = {r["key"]: r["value"] for r in json.loads(kv("get", tenant, "ns", "--json"))}
    assert rows["port"] == "8080"  # typed as str by the schema, not parsed as int
    assert rows["pw"] == "***"
    shown = json.loads(kv("get", tenant, "ns", "pw", "--json", "--show-secrets"))
    assert shown["value"] == "hunter2"
    effective = json.loads(kv("get", tenant, "ns", "--effective", "--json"))
    assert {r["key"]: r["value"] for r in effective}["pw"] == "***"
    kv("schema", tenant, "ns", "--set", "-", stdin="{not json", code=5)


def test_set_of_a_deeply_nested_value_is_exit_5(kv, tenant: str) -> None:  # type: ignore[no-untyped-def]
    for depth in (65, 10_000):
        deep = "[" * depth + "]" * depth
        out = kv("set", tenant, "ns", f"k:={deep}", "--json", code=5)
        assert "64 levels" in json.loads(out)["error"]["message"]
    kv("get", tenant, "ns", code=3)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "acme", "ns"),
        ("get", "acme", "ns", "k"),
        ("get", "acme", "ns", "--effective"),
        ("set", "acme", "ns", "k=1"),
        ("delete", "acme", "ns", "k"),
        ("history", "acme", "ns", "k"),
        ("rollback", "acme", "ns", "k", "1"),
        ("schema", "acme", "ns"),
        ("tenants",),
        ("export", "acme"),
    ],
)
def test_unreachable_redis_is_exit_6_without_a_traceback(args: tuple[str, ...]) -> None:
    from .redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    result = runner.invoke(app, [*args, "--redis-url", url])
    assert result.exit_code == 6, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert len(result.output.splitlines()) <= 3, result.output


def test_sensitive_values_are_masked_in_schema_and_layered_reads(kv, tenant: str) -> None:  # type: ignore[no-untyped-def]
    canary, other = "CANARY-default-secret", "CANARY-defaults-value"
    doc = {"keys": {"api_key": {"type": "str", "sensitive": True, "default": canary}}}
    kv("schema", tenant, "_defaults", "--set", "-", stdin=json.dumps(doc))
    out = kv("schema", tenant, "_defaults")
    assert canary not in out
    assert json.loads(out)["keys"]["api_key"]["default"] == "***"
    shown = json.loads(kv("schema", tenant, "_defaults", "--show-secrets"))
    assert shown["keys"]["api_key"]["default"] == canary
    # sensitive only in the namespace's schema, the value lives in _defaults
    kv("set", tenant, "_defaults", f"token={other}")
    ns_doc = {"keys": {"token": {"type": "str", "sensitive": True}}}
    kv("schema", tenant, "ai-1", "--set", "-", stdin=json.dumps(ns_doc))
    for args in (
        ("get", tenant, "ai-1", "--effective", "--json"),
        ("get", tenant, "_defaults", "--json"),
        ("history", tenant, "_defaults", "token", "--json"),
    ):
        out = kv(*args)
        assert other not in out, (args, out)
        assert canary not in out, (args, out)
    assert other in kv("get", tenant, "_defaults", "--json", "--show-secrets")
