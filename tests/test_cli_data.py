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
