"""Import and export: JSON, YAML and .env round trips, schema checks, CLI."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvconf import KeySpec, Schema, Store
from kvconf.cli import app
from kvconf.exceptions import InvalidInput, SchemaViolation
from kvconf.io import detect_format, dumps, export_tenant, import_values, loads


async def test_json_round_trip_and_idempotent_import(store: Store, tenant: str) -> None:
    values = {"timeout": 30, "model": "m1", "tags": ["a", {"b": None}], "on": True}
    await store.set_many(tenant, "ai-1", values)
    await store.set(tenant, "_defaults", "region", "eu")
    doc = await export_tenant(store, tenant)
    assert doc["namespaces"] == {"_defaults": {"region": "eu"}, "ai-1": values}
    text = dumps(doc, "json")

    other = f"{tenant}-copy"
    report = await import_values(store, other, loads(text, "json"))
    assert {r.namespace: r.written for r in report.namespaces} == {"_defaults": 1, "ai-1": 4}
    revisions = {r.revision for r in report.namespaces}
    assert revisions == {1, 2}  # one change set per namespace
    assert (await export_tenant(store, other))["namespaces"] == doc["namespaces"]
    again = await import_values(store, other, loads(text, "json"))
    assert [r.written for r in again.namespaces] == [0, 0]
    assert await store.revision(other) == 2


async def test_env_import_types_values_from_the_schema(store: Store, tenant: str) -> None:
    await store.create_tenant(tenant)
    schema = Schema(keys={"stale_timeout": KeySpec(type="int"), "name": KeySpec(type="str")})
    await store.set_schema(tenant, "ai-12", schema)
    env = """
# migrated from the old service
export APP_STALE_TIMEOUT=25
APP_NAME="quoted \\"name\\""
APP_DEBUG=true
APP_LIST='[1, 2]'
OTHER=ignored
"""
    data = loads(env, "env", namespace="ai-12", prefix="APP_")
    assert data == {
        "ai-12": {"stale_timeout": "25", "name": 'quoted "name"', "debug": "true", "list": "[1, 2]"}
    }
    await import_values(store, tenant, data, texts=True)
    got = {k: e.value for k, e in (await store.get_namespace(tenant, "ai-12")).items()}
    assert got == {"stale_timeout": 25, "name": 'quoted "name"', "debug": True, "list": [1, 2]}
    out = dumps(await export_tenant(store, tenant, "ai-12"), "env", prefix="APP_")
    assert "APP_STALE_TIMEOUT=25\n" in out
    assert loads(out, "env", namespace="ai-12", prefix="APP_")["ai-12"]["stale_timeout"] == "25"


async def test_schema_violation_refuses_the_whole_import(store: Store, tenant: str) -> None:
    await store.create_tenant(tenant)
    await store.set_schema(tenant, "b", Schema(keys={"port": KeySpec(type="int", min=1)}))
    data = {"a": {"x": 1}, "b": {"port": 0}}
    with pytest.raises(SchemaViolation) as info:
        await import_values(store, tenant, data)
    assert info.value.problems[0].key == "b/port"
    assert await store.revision(tenant) == 2  # the creation and the schema write
    with pytest.raises(InvalidInput):
        await import_values(store, tenant, {"b": {"port": "abc"}}, texts=True)


def test_parsing_errors_and_formats() -> None:
    assert detect_format("config.yaml") == "yaml"
    assert detect_format(".env.production") == "env"
    assert detect_format("prod.env") == "env"
    assert detect_format("x.json") == "json"
    with pytest.raises(InvalidInput):
        loads("[1, 2]", "json")
    with pytest.raises(InvalidInput):
        loads("{bad", "json")
    with pytest.raises(InvalidInput):
        loads("A=1", "env")
    with pytest.raises(InvalidInput):
        loads("not a pair", "env", namespace="n")
    with pytest.raises(InvalidInput):
        loads('{"ns": 3}', "json")
    assert loads('{"k": {"deep": 1}}', "json", namespace="n") == {"n": {"k": {"deep": 1}}}


def test_yaml_when_available() -> None:
    pytest.importorskip("yaml")
    doc = {"kvconf_export": 1, "tenant": "t", "revision": 3, "namespaces": {"n": {"a": [1]}}}
    assert loads(dumps(doc, "yaml"), "yaml") == {"n": {"a": [1]}}


async def test_cli_export_import(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    runner = CliRunner()

    async def cli(*args: str) -> tuple[int, str]:
        result = await asyncio.to_thread(runner.invoke, app, [*args, "--redis-url", backend_url])
        if result.exit_code == 1:
            raise AssertionError(result.exception)
        return result.exit_code, result.stdout

    await store.set_many(tenant, "ai-1", {"timeout": 30, "model": "m1"})
    out_file = tmp_path / "ai-1.json"
    out_file.write_text("stale")
    out_file.chmod(0o644)
    code, _ = await cli("export", tenant, "ai-1", "-o", str(out_file))
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600  # unmasked values: owner only
    assert code == 0
    assert json.loads(out_file.read_text())["namespaces"]["ai-1"]["timeout"] == 30
    code, out = await cli("import", f"{tenant}-2", str(out_file), "--json")
    assert code == 0
    assert json.loads(out)["namespaces"][0]["written"] == 2
    env_file = tmp_path / "prod.env"
    env_file.write_text("TIMEOUT=45\nNEW_KEY=x\n")
    code, out = await cli("import", f"{tenant}-2", str(env_file), "-n", "ai-1", "--dry-run")
    assert code == 0
    assert "dry run" in out
    code, out = await cli("import", f"{tenant}-2", str(env_file), "-n", "ai-1")
    assert code == 0
    assert (await store.get(f"{tenant}-2", "ai-1", "timeout")).value == 45
    code, out = await cli("export", f"{tenant}-2", "ai-1", "-f", "env")
    assert "TIMEOUT=45" in out
    code, _ = await cli("import", tenant, str(env_file))  # .env needs a namespace
    assert code == 5
