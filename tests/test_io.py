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
    assert await store.revision(tenant) == 2  # only the creation and the schema write
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


async def _cli(backend_url: str, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--redis-url", backend_url])
    if result.exit_code == 1:
        raise AssertionError(result.exception)
    return result.exit_code, result.stdout


async def test_export_import_carries_schemas_so_secrets_stay_masked(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    canary = "CANARY-api-key-" + tenant
    schema = Schema(keys={"api_key": KeySpec(type="str", sensitive=True)})
    await store.set_schema(tenant, "_defaults", schema)
    await store.set(tenant, "_defaults", "api_key", canary)
    await store.set(tenant, "ai-1", "timeout", 30)
    out_file = tmp_path / "acme.json"
    code, _ = await _cli(backend_url, "export", tenant, "-o", str(out_file))
    assert code == 0
    copy = f"{tenant}-copy"
    code, _ = await _cli(backend_url, "import", copy, str(out_file))
    assert code == 0
    assert await store.get_schema(copy, "_defaults") == schema
    code, out = await _cli(backend_url, "get", copy, "_defaults", "--json")
    assert code == 0
    assert canary not in out
    assert json.loads(out)[0]["value"] == "***"
    # the library's own round trip, and a schema the values break refuses the import
    doc = await export_tenant(store, tenant)
    assert doc["schemas"]["_defaults"]["keys"]["api_key"]["sensitive"] is True
    from kvconf.io import load_document

    parsed = load_document(dumps(doc, "json"), "json")
    assert parsed.schemas == {"_defaults": schema}
    strict = Schema(keys={"timeout": KeySpec(type="int", max=10)})
    with pytest.raises(SchemaViolation):
        await import_values(store, f"{tenant}-3", parsed.namespaces, schemas={"ai-1": strict})
    assert not await store.exists(f"{tenant}-3")


async def test_export_with_history_and_import_preserving_versions(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    schema = Schema(keys={"secret": KeySpec(type="str", sensitive=True)})
    await store.set_schema(tenant, "svc", schema)
    await store.set(tenant, "svc", "timeout", 10, actor="alice", reason="first")
    await store.set(tenant, "svc", "timeout", 20, actor="bob", reason="second")
    await store.set(tenant, "svc", "secret", "s1")
    await store.set(tenant, "_defaults", "region", "eu")
    source = await store.history(tenant, "svc", "timeout")
    out_file = tmp_path / "hist.json"
    code, _ = await _cli(backend_url, "export", tenant, "--include-history", "-o", str(out_file))
    assert code == 0
    doc = json.loads(out_file.read_text())
    kept = doc["history"]["svc"]["timeout"]
    assert [(v["version"], v["updated_by"], v["reason"]) for v in kept] == [
        (1, "alice", "first"),
        (2, "bob", "second"),
    ]
    copy = f"{tenant}-copy"
    code, out = await _cli(backend_url, "import", copy, str(out_file), "--preserve-versions")
    assert code == 0, out
    copied = await store.history(copy, "svc", "timeout")
    assert [(v.version, v.value, v.updated_by, v.reason, v.updated_at) for v in copied] == [
        (v.version, v.value, v.updated_by, v.reason, v.updated_at) for v in source
    ]
    entry = await store.get(copy, "svc", "timeout")
    assert (entry.value, entry.version) == (20, 2)
    assert await store.get_schema(copy, "svc") == schema
    assert (await store.get(copy, "_defaults", "region")).value == "eu"
    before = await store.revision(copy)
    # keys the target has are refused whole, unless --replace
    await store.set(copy, "svc", "timeout", 99)
    await store.set(copy, "svc", "other", 1)
    code, _ = await _cli(backend_url, "import", copy, str(out_file), "--preserve-versions")
    assert code == 4
    assert (await store.get(copy, "svc", "timeout")).value == 99
    code, out = await _cli(
        backend_url, "import", copy, str(out_file), "--preserve-versions", "--replace"
    )
    assert code == 0, out
    entry = await store.get(copy, "svc", "timeout")
    assert (entry.value, entry.version) == (20, 2)
    assert [v.version for v in await store.history(copy, "svc", "timeout")] == [2, 1]
    assert (await store.get(copy, "svc", "other")).value == 1  # keys not in the file stay
    assert await store.revision(copy) > before + 2
    # and the store keeps writing on top of the imported versions
    result = await store.set(copy, "svc", "timeout", 21)
    assert result.versions["timeout"] == 3
    # an export without history cannot preserve versions
    plain = tmp_path / "plain.json"
    await _cli(backend_url, "export", tenant, "-o", str(plain))
    code, _ = await _cli(backend_url, "import", f"{tenant}-x", str(plain), "--preserve-versions")
    assert code == 5


def test_a_deeply_nested_import_file_is_invalid_input() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for text in (deep, '{"ns": {"k": ' + deep + "}}"):
        with pytest.raises(InvalidInput, match="64 levels"):
            loads(text, "json")


async def test_strict_import_makes_a_namespace_match_the_file(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "ns", {"a": 1, "b": 2, "c": 3})
    await store.set(tenant, "other", "keep", 1)
    file = {"ns": {"a": 10, "b": 2, "d": 4}}
    dry = await import_values(store, tenant, file, strict=True, dry_run=True)
    (row,) = dry.namespaces
    assert row.diff == {"a": "changed", "c": "removed", "d": "added"}
    assert (row.written, row.deleted, row.unchanged) == (2, 1, 1)
    assert await store.revision(tenant) == 2  # the dry run wrote nothing
    done = await import_values(store, tenant, file, strict=True)
    assert done.namespaces[0].change_sets == 1  # one change set: sets and deletes together
    values = {k: e.value for k, e in (await store.get_namespace(tenant, "ns")).items()}
    assert values == {"a": 10, "b": 2, "d": 4}
    assert (await store.get(tenant, "other", "keep")).value == 1  # namespaces not in the file
    plain = await import_values(store, tenant, {"ns": {"a": 10}})
    assert plain.namespaces[0].deleted == 0  # without strict nothing is deleted
    assert len(await store.get_namespace(tenant, "ns")) == 3


async def test_import_writes_a_value_whose_json_type_changed(store: Store, tenant: str) -> None:
    await store.set_many(tenant, "ns", {"flag": 1, "ratio": 2})
    report = await import_values(store, tenant, {"ns": {"flag": True, "ratio": 2.0}})
    assert report.namespaces[0].written == 2
    values = {k: e.value for k, e in (await store.get_namespace(tenant, "ns")).items()}
    assert values["flag"] is True
    assert isinstance(values["ratio"], float)


def test_env_files_parse_as_python_dotenv_does() -> None:
    text = (
        "# a comment\n"
        "export APP_PLAIN=1\n"
        'APP_MULTI="line one\nline two"\n'
        "APP_SINGLE='keep \\n as is' # trailing comment\n"
        'APP_ESCAPED="tab\\there"\n'
        "OTHER=ignored\n"
    )
    found = loads(text, "env", namespace="n", prefix="APP_")
    assert found == {
        "n": {
            "plain": "1",
            "multi": "line one\nline two",
            "single": "keep \\n as is",
            "escaped": "tab\there",
        }
    }
    with pytest.raises(InvalidInput) as info:
        loads("APP_OK=1\nthis is not a pair\n", "env", namespace="n")
    assert info.value.details["line"] == 2
