"""The CLI as complete as the REST API: formats, typed values, dry runs, tenants,
log, fleet, compare and promote, in-process on both backends."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from typer.testing import CliRunner, Result

from kvconf import KeySpec, Schema, Settings, Store, Watcher, __version__
from kvconf.cli import app

runner = CliRunner()
Kv = Callable[..., str]


@pytest.fixture
def run_cli(backend_url: str) -> Callable[..., Result]:
    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = runner.invoke(app, [*args, "--redis-url", backend_url], input=stdin)
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return invoke


@pytest.fixture
def kv(run_cli: Callable[..., Result]) -> Kv:
    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> str:
        return str(run_cli(*args, code=code, stdin=stdin).stdout)

    return invoke


def _schema(tmp_path: Path, keys: dict[str, Any]) -> str:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"keys": keys}))
    return str(path)


# -- values as typed ---------------------------------------------------------


def test_values_are_taken_as_typed(kv: Kv, tenant: str, tmp_path: Path) -> None:
    body = tmp_path / "motd.txt"
    body.write_text("line 1\nline 2\n")
    doc = tmp_path / "hosts.json"
    doc.write_text('["a", "b"]')
    kv("set", tenant, "ns", "version=1.10", "n:=1.10", "flag:=true", "raw=true",
       f"motd=@{body}", f"hosts:=@{doc}", "piped=@-", stdin="from stdin")  # fmt: skip
    got = json.loads(kv("get", tenant, "ns", "-o", "json"))
    values = {r["key"]: r["value"] for r in got}
    assert values == {
        "version": "1.10",  # never parsed as the number 1.1
        "n": 1.1,
        "flag": True,
        "raw": "true",
        "motd": "line 1\nline 2\n",
        "hosts": ["a", "b"],
        "piped": "from stdin",
    }


def test_schema_types_text_and_every_problem_is_listed(
    run_cli: Callable[..., Result], kv: Kv, tenant: str, tmp_path: Path
) -> None:
    kv("set", tenant, "ns", "seed=x")
    schema = {"port": {"type": "int", "min": 1}, "ratio": {"type": "float"},
              "name": {"type": "str", "max_length": 3}}  # fmt: skip
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, schema))
    kv("set", tenant, "ns", "port=8080", "ratio=0.5", "name=abc")
    assert json.loads(kv("get", tenant, "ns", "port", "-o", "json"))["value"] == 8080
    bad = run_cli("set", tenant, "ns", "port=eighty", "ratio=x", "name=toolong", "j:={",
                  "ok=1", code=5)  # fmt: skip
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 4, bad.stderr
    for key, line in zip(["j", "name", "port", "ratio"], lines, strict=True):
        assert line.startswith(f"error: {key}: ")
    assert "toolong" not in bad.stderr  # never a value
    assert "eighty" not in bad.stderr
    assert json.loads(kv("get", tenant, "ns", "port", "-o", "json"))["version"] == 1
    out = json.loads(kv("set", tenant, "ns", "port=0", "--json", code=5))
    assert out["error"]["code"] == "schema_violation"
    assert [p["key"] for p in out["error"]["problems"]] == ["port"]


# -- output formats ----------------------------------------------------------


def test_output_formats_and_nothing_truncated(kv: Kv, tenant: str) -> None:
    long = "x" * 500 + "-end"
    kv("set", tenant, "ns", f"long={long}", "n:=3", 'obj:={"a": [1, 2]}')
    table = kv("get", tenant, "ns")
    header, *rows = table.strip().split("\n")
    assert header.split("\t") == ["key", "value", "version", "revision", "updated_at",
                                  "updated_by"]  # fmt: skip
    assert {r.split("\t")[0]: r.split("\t")[1] for r in rows} == {
        "long": long,
        "n": "3",
        "obj": '{"a":[1,2]}',
    }
    assert kv("get", tenant, "ns", "long", "-o", "value") == long + "\n"
    assert kv("get", tenant, "ns", "-o", "value") == f'{long}\n3\n{{"a":[1,2]}}\n'
    assert json.loads(kv("get", tenant, "ns", "n", "--json"))["value"] == 3
    docs = yaml.safe_load(kv("get", tenant, "ns", "-o", "yaml"))
    assert {d["key"]: d["value"] for d in docs} == {"long": long, "n": 3, "obj": {"a": [1, 2]}}
    assert kv("history", tenant, "ns", "n", "-o", "value") == "3\n"
    assert kv("tenants", "-o", "value").splitlines().count(tenant) == 1
    schema_yaml = kv("schema", tenant, "ns", "-o", "yaml")
    assert yaml.safe_load(schema_yaml) is None
    kv("get", tenant, "ns", "-o", "xml", code=2)


def test_yaml_without_pyyaml_is_a_clear_exit_5(
    run_cli: Callable[..., Result], kv: Kv, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kv("set", tenant, "ns", "a=1")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    result = run_cli("get", tenant, "ns", "-o", "yaml", code=5)
    assert "kvconf[yaml]" in result.stderr
    assert result.stdout == ""


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"kvconf {__version__}"


# -- dry runs ----------------------------------------------------------------


def test_dry_runs_print_the_diff_and_write_nothing(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "ns", "a:=1", "b=x", "pw=old")
    secret = {"pw": {"type": "str", "sensitive": True}}
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, secret))
    kv("set", tenant, "ns", "a:=2")  # revision 3
    out = json.loads(kv("set", tenant, "ns", "a:=5", "c=new", "pw=hunter2", "--dry-run", "--json"))
    assert out["dry_run"] is True
    assert [(c["key"], c["change"], c["old"], c["new"]) for c in out["changes"]] == [
        ("a", "changed", 2, 5),
        ("c", "added", None, "new"),
        ("pw", "changed", "***", "***"),
    ]
    text = kv("set", tenant, "ns", "a:=5", "--dry-run")
    assert text.startswith("dry run: nothing was written")
    assert "a\tchanged\t2\t5" in text
    deleted = json.loads(kv("delete", tenant, "ns", "b", "--dry-run", "-o", "json"))
    assert [(c["key"], c["change"], c["old"]) for c in deleted["changes"]] == [
        ("b", "removed", "x")
    ]
    kv("delete", tenant, "ns", "nope", "--dry-run", code=3)  # as the write would refuse
    back = json.loads(kv("rollback", tenant, "ns", "a", "1", "--dry-run", "--json"))
    assert [(c["key"], c["old"], c["new"]) for c in back["changes"]] == [("a", 2, 1)]
    whole = json.loads(kv("rollback", tenant, "--to-revision", "1", "--dry-run", "--json"))
    assert {(c["key"], c["change"]) for c in whole["changes"]} == {("a", "changed")}
    kv("set", tenant, "ns", "a:=9", "--expect-version", "1", "--dry-run", code=4)
    assert json.loads(kv("tenants", tenant, "--json"))["revision"] == 3  # nothing written
    assert json.loads(kv("get", tenant, "ns", "a", "--json"))["value"] == 2


def test_rollback_grammar_key_and_revision(kv: Kv, tenant: str) -> None:
    kv("set", tenant, "ns", "a:=1")
    kv("set", tenant, "other", "z=1")
    kv("set", tenant, "ns", "a:=2", "b=x")
    kv("set", tenant, "other", "z=2")
    assert "back to revision 2" in kv("rollback", tenant, "ns", "--to-revision", "2")
    assert [(r["key"], r["value"]) for r in json.loads(kv("get", tenant, "ns", "--json"))] == [
        ("a", 1)
    ]
    assert json.loads(kv("get", tenant, "other", "z", "--json"))["value"] == "2"
    kv("rollback", tenant, "--to-revision", "1")
    kv("get", tenant, "other", "z", code=3)
    kv("rollback", tenant, "ns", "a", "2")
    assert json.loads(kv("get", tenant, "ns", "a", "--json"))["value"] == 2
    kv("rollback", tenant, "ns", "a", code=2)  # key without version
    kv("rollback", tenant, "ns", "a", "1", "--to-revision", "1", code=2)
    kv("rollback", tenant, code=2)


# -- tenants -------------------------------------------------------------------


def test_tenant_lifecycle(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "_defaults", "region=eu", "retries:=3")
    kv("set", tenant, "ai-1", "model=big")
    kv("schema", tenant, "_defaults", "--set", _schema(tmp_path, {"retries": {"type": "int"}}))
    tpl, cloned = f"{tenant}-tpl", f"{tenant}-clone"
    sets = ("--set", "_defaults/retries=7", "--set", "ai-9/x:=[1]")
    assert "from template" in kv("tenant", "create", tpl, "--template", tenant, *sets)
    assert json.loads(kv("get", tpl, "_defaults", "retries", "--json"))["value"] == 7  # int
    assert json.loads(kv("get", tpl, "ai-9", "x", "--json"))["value"] == [1]
    assert kv("get", tpl, "ai-1", "-o", "value") == ""  # a template copies _defaults only
    kv("tenant", "clone", tenant, cloned)
    assert json.loads(kv("get", cloned, "ai-1", "model", "--json"))["value"] == "big"
    kv("tenant", "create", tpl, code=4)  # exists
    assert "would soft-delete" in kv("tenant", "delete", cloned, "--dry-run")
    assert cloned in kv("tenant", "list", "-o", "value").split()
    kv("tenant", "delete", cloned)
    assert cloned not in kv("tenant", "list", "-o", "value").split()
    states = {t["tenant"]: t["state"]
              for t in json.loads(kv("tenant", "list", "--include-deleted", "--json"))}  # fmt: skip
    assert (states[cloned], states[tenant]) == ("deleted", "live")
    assert "deleted" in kv("tenants", "--include-deleted")
    kv("get", cloned, "ai-1", code=3)
    kv("tenant", "undelete", cloned)
    assert json.loads(kv("get", cloned, "ai-1", "model", "--json"))["value"] == "big"
    info = json.loads(kv("tenant", "info", tenant, "-o", "json"))
    assert info["namespaces"] == ["_defaults", "ai-1"]


def test_tenant_hard_delete_snapshots_first(kv: Kv, backend_url: str, tmp_path: Path) -> None:
    name = f"hard-{tmp_path.name[-8:]}".replace("_", "-")
    kv("set", name, "ns", "a=1")
    result = runner.invoke(
        app,
        [
            "tenant",
            "delete",
            name,
            "--hard",
            "--json",
            "--redis-url",
            backend_url,
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["deleted"] == "hard"
    assert Path(out["snapshot"]).exists()
    assert name not in kv("tenant", "list", "--include-deleted", "-o", "value").split()
    kv("tenant", "undelete", name, code=3)


# -- log, fleet, diff, compare, promote -----------------------------------------


def test_log_since(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "ns", "a:=1", "--reason", "first")
    kv("set", tenant, "ns", "pw=s3cret")
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, {"pw": {"sensitive": True}}))
    kv("delete", tenant, "ns", "a")
    events = json.loads(kv("log", tenant, "--since", "1", "--json"))
    assert [(e["revision"], e["type"]) for e in events] == [(2, "change"), (3, "schema"),
                                                             (4, "change")]  # fmt: skip
    assert events[0]["changes"][0]["value"] == "***"
    assert "s3cret" not in kv("log", tenant)
    assert kv("log", tenant, "--since", "2", "-o", "value") == "3\n4\n"
    kv("log", "no-such-tenant", code=3)


def test_fleet_lists_running_watchers(kv: Kv, backend_url: str, tenant: str) -> None:
    async def scenario() -> str:
        async with Store(settings=Settings(redis_url=backend_url)) as store:
            await store.set(tenant, "ns", "a", 1)
            async with Watcher(tenant, settings=Settings(redis_url=backend_url),
                               fleet_interval=0.1) as watcher:  # fmt: skip
                for _ in range(100):
                    out = await asyncio.to_thread(kv, "fleet", tenant, "--json")
                    if json.loads(out):
                        return out
                    await asyncio.sleep(0.05)
                raise AssertionError(f"no fleet report from {watcher.revision}")

    members = json.loads(asyncio.run(scenario()))
    assert len(members) == 1
    assert (members[0]["revision"], members[0]["stale"]) == (1, False)
    kv("fleet", "no-such-tenant", code=3)


def test_diff_across_tenants_and_revisions(kv: Kv, tenant: str) -> None:
    stg = f"{tenant}-stg"
    kv("set", stg, "ai-12", "timeout:=30", "beta:=true", "same=x")
    kv("set", tenant, "ai-12", "timeout:=15", "old=1", "same=x")
    out = json.loads(kv("diff", f"{stg}/ai-12", f"{tenant}/ai-12", "--json"))
    assert out["same"] == 1
    assert [(d["key"], d["change"], d["left"], d["right"]) for d in out["differences"]] == [
        ("beta", "only_left", True, None),
        ("old", "only_right", None, "1"),
        ("timeout", "different", 30, 15),
    ]
    assert kv("diff", f"{stg}/ai-12", f"{tenant}/ai-12", "-o", "value") == "beta\nold\ntimeout\n"
    table = kv("diff", f"{stg}/ai-12", f"{tenant}/ai-12")
    assert "timeout\tdifferent\t30 (v1)\t15 (v1)" in table
    revs = json.loads(kv("diff", tenant, "--from", "0", "--json"))  # revision diffs still work
    assert {c["key"] for c in revs["changes"]} == {"timeout", "old", "same"}
    kv("diff", f"{stg}/ai-12", tenant, code=2)


def test_promote_copies_differences_with_cas(kv: Kv, tenant: str) -> None:
    stg = f"{tenant}-stg"
    kv("set", stg, "ai-12", "timeout:=30", "beta:=true", "same=x")
    kv("set", tenant, "ai-12", "timeout:=15", "old=1", "same=x")
    src, dst = f"{stg}/ai-12", f"{tenant}/ai-12"
    dry = json.loads(kv("promote", src, dst, "--dry-run", "--json"))
    assert [(c["key"], c["change"]) for c in dry["changes"]] == [
        ("beta", "added"), ("timeout", "changed")
    ]  # fmt: skip
    assert json.loads(kv("tenants", tenant, "--json"))["revision"] == 1
    only = json.loads(kv("promote", src, dst, "--keys", "timeout", "--json"))
    assert [c["key"] for c in only["changes"]] == ["timeout"]
    assert only["revision"] == 2
    assert "promoted 2 key(s)" in kv("promote", src, dst, "--prune")  # beta added, old deleted
    now = {r["key"]: r["value"] for r in json.loads(kv("get", tenant, "ai-12", "--json"))}
    assert now == {"beta": True, "same": "x", "timeout": 30}
    assert "nothing to promote" in kv("promote", src, dst)


def test_promote_fails_whole_on_a_concurrent_write(backend_url: str, tenant: str) -> None:
    from kvconf.compare import compare, promotion_plan

    async def scenario() -> None:
        async with Store(settings=Settings(redis_url=backend_url)) as store:
            await store.set_many(f"{tenant}-stg", "ns", {"a": 2, "b": 2})
            await store.set_many(tenant, "ns", {"a": 1})
            plan = promotion_plan(
                await compare(store, f"{tenant}-stg", "ns", tenant, "ns"), destination_ns="ns"
            )
            await store.set(tenant, "ns", "a", 5)  # lands between the compare and the commit
            from kvconf import VersionConflict

            with pytest.raises(VersionConflict):
                await store.commit(tenant, "ns", plan.values, expect=plan.expect)
            assert (await store.get_namespace(tenant, "ns")).keys() == {"a"}

    asyncio.run(scenario())


def test_get_by_category(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "ns", "hook=h", "channel=c", "x:=1")
    schema = {"hook": {"category": "slack"}, "channel": {"category": "slack"}}
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, schema))
    assert kv("get", tenant, "ns", "--category", "slack", "-o", "value") == "c\nh\n"
    effective = json.loads(kv("get", tenant, "ns", "--effective", "--category", "slack", "--json"))
    assert sorted(r["key"] for r in effective) == ["channel", "hook"]


def test_schema_accepts_json_and_output_flags(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "ns", "a=1")
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, {"a": {"type": "str"}}))
    as_default = json.loads(kv("schema", tenant, "ns"))
    assert json.loads(kv("schema", tenant, "ns", "--json")) == as_default
    assert json.loads(kv("schema", tenant, "ns", "-o", "json")) == as_default
    assert yaml.safe_load(kv("schema", tenant, "ns", "-o", "yaml")) == as_default
    assert Schema(keys={"a": KeySpec(type="str")}).keys["a"].type == as_default["keys"]["a"]["type"]


def test_schema_of_every_namespace(kv: Kv, tenant: str, tmp_path: Path) -> None:
    kv("set", tenant, "ns", "a=1")
    kv("schema", tenant, "ns", "--set", _schema(tmp_path, {"a": {"type": "str"}}))
    kv("schema", tenant, "_defaults", "--set", _schema(tmp_path, {"b": {"type": "int"}}))
    every = json.loads(kv("schema", tenant))
    assert sorted(every) == ["_defaults", "ns"]
    assert every["_defaults"]["keys"]["b"]["type"] == "int"
    kv("schema", tenant, "--remove", code=5)


def test_tokens_from_the_cli_authenticate_api_callers(
    kv: Kv, backend_url: str, tenant: str
) -> None:
    from .api_helpers import client, running_app

    name = f"ci-{tenant}"
    text = kv("token", "create", name, "--grant", f"{tenant}=read", "--grant", f"{tenant}=write")
    token = text.strip()
    assert token.startswith("kvc_")
    listed = {r["name"]: r for r in json.loads(kv("token", "list", "--json"))}
    assert listed[name]["grants"] == {tenant: ["read", "write"]}
    assert token not in kv("token", "list", "-o", "yaml")
    kv("token", "create", name, "--grant", f"{tenant}=read", code=4)
    kv("token", "create", "x", "--grant", "no-equals", code=5)

    async def call() -> list[int]:
        async with running_app(backend_url) as app, client(app, token) as c:
            ok = (await c.get(f"/api/v1/tenants/{tenant}/namespaces")).status_code
            other = (await c.get("/api/v1/tenants/someone-else/namespaces")).status_code
            await asyncio.to_thread(kv, "token", "revoke", name)
            app.state.auth._cache.clear()  # revocation is seen within 2 s; do not wait here
            revoked = (await c.get(f"/api/v1/tenants/{tenant}/namespaces")).status_code
            return [ok, other, revoked]

    kv("set", tenant, "ns", "a=1")
    assert asyncio.run(call()) == [200, 404, 401]
    kv("token", "revoke", name, code=3)


def test_promote_into_a_new_tenant_creates_it(kv: Kv, tenant: str) -> None:
    kv("set", tenant, "ns", "a=1", "b:=2")
    fresh = f"{tenant}-new"
    dry = json.loads(kv("promote", f"{tenant}/ns", f"{fresh}/ns", "--dry-run", "--json"))
    assert [(c["key"], c["change"]) for c in dry["changes"]] == [("a", "added"), ("b", "added")]
    assert fresh not in kv("tenant", "list", "-o", "value").split()
    kv("promote", f"{tenant}/ns", f"{fresh}/ns")
    assert kv("get", fresh, "ns", "-o", "value") == "1\n2\n"
    kv("promote", f"{tenant}-none/ns", f"{fresh}/ns", code=3)  # the source must exist


def test_terminal_tables_fold_never_truncate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kvconf.cli._output import Format, emit

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "60")
    emit(Format.table, None, columns=("key", "value"), rows=[("k", "x" * 200 + "END")])
    out = capsys.readouterr().out
    assert "…" not in out
    assert "END" in out
    assert out.count("x") == 200
