"""``kvconf apply``: a change set across namespaces, in-process, on both backends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect
import pytest
from typer.testing import CliRunner, Result

from api.models import ChangeSetAcross
from kvconf.cli import app
from kvconf.cli._apply import ChangeSet

runner = CliRunner()

Kv = Callable[..., Result]
SECRET = "CANARY-apply-secret"


@pytest.fixture
def kv(backend_url: str) -> Kv:
    def invoke(*args: str, code: int = 0, stdin: str | None = None) -> Result:
        result = runner.invoke(app, [*args, "--redis-url", backend_url], input=stdin)
        assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
        return result

    return invoke


def _doc(**fields: Any) -> str:
    return json.dumps(fields)


def _revision(kv: Kv, tenant: str) -> int:
    revision: int = json.loads(kv("tenants", tenant, "--json").stdout)["revision"]
    return revision


def _values(kv: Kv, tenant: str, namespace: str) -> dict[str, Any]:
    rows = json.loads(kv("get", tenant, namespace, "--json", "--show-secrets").stdout)
    return {r["key"]: r["value"] for r in rows}


def test_the_file_has_the_fields_of_the_api_body() -> None:
    mine, api = msgspec.inspect.type_info(ChangeSet), msgspec.inspect.type_info(ChangeSetAcross)
    assert isinstance(mine, msgspec.inspect.StructType)
    assert isinstance(api, msgspec.inspect.StructType)
    assert mine.fields == api.fields  # names, types and defaults
    assert mine.forbid_unknown_fields
    assert api.forbid_unknown_fields


def test_apply_across_two_namespaces_is_one_revision(kv: Kv, tenant: str) -> None:
    kv("set", tenant, "svc", "timeout:=10", "old=x")
    kv("set", tenant, "web", "theme=light")
    doc = _doc(values={"svc": {"timeout": 30}, "web": {"theme": "dark", "new": [1]}},
               deletes={"svc": ["old"]}, expect={"svc": {"timeout": 1}, "web": {"new": 0}},
               reason="from the file")  # fmt: skip
    out = kv("apply", tenant, "-", "--reason", "move", "--actor", "ops-bot", stdin=doc).stdout
    assert out.splitlines()[0] == "revision 3: 4 key(s) in 2 namespace(s)"
    assert out.splitlines()[1:] == [
        "namespace\tkey\tchange\tversion",
        "svc\told\tdeleted\t2",
        "svc\ttimeout\tset\t2",
        "web\tnew\tset\t1",
        "web\ttheme\tset\t2",
    ]
    assert _revision(kv, tenant) == 3
    assert _values(kv, tenant, "svc") == {"timeout": 30}
    assert _values(kv, tenant, "web") == {"theme": "dark", "new": [1]}
    (event,) = json.loads(kv("log", tenant, "--since", "2", "-o", "json").stdout)
    assert (event["namespace"], event["revision"]) == ("*", 3)
    assert (event["reason"], event["actor"]) == ("move", "ops-bot")  # --reason wins
    again = kv(
        "apply", tenant, "-", "-o", "json", stdin=_doc(values={"a": {"k": 1}, "b": {"k": 2}})
    )
    result = json.loads(again.stdout)
    assert (result["tenant"], result["namespace"], result["revision"]) == (tenant, "*", 4)
    assert result["versions"] == {"a/k": 1, "b/k": 1}
    (event,) = json.loads(kv("log", tenant, "--since", "3", "-o", "json").stdout)
    assert event["reason"] == ""


def test_a_yaml_file_and_the_file_reason(kv: Kv, tenant: str, tmp_path: Path) -> None:
    path = tmp_path / "changes.yaml"
    path.write_text("values:\n  svc:\n    port: 8080\n  web:\n    host: a\nreason: by file\n")
    assert kv("apply", tenant, str(path), "-o", "value").stdout == "1\n"
    assert _values(kv, tenant, "svc") == {"port": 8080}
    (event,) = json.loads(kv("log", tenant, "-o", "json").stdout)
    assert event["reason"] == "by file"


def test_a_version_conflict_is_exit_4_and_writes_nothing(kv: Kv, tenant: str) -> None:
    kv("set", tenant, "svc", "a:=1")
    kv("set", tenant, "svc", "a:=2")
    doc = _doc(values={"svc": {"a": 3}, "web": {"b": 1}}, expect={"svc": {"a": 1}, "web": {"b": 0}})
    for dry in ((), ("--dry-run",)):
        failed = kv("apply", tenant, "-", *dry, code=4, stdin=doc)
        assert "svc/a (expected 1, is 2)" in failed.stderr
        error = json.loads(kv("apply", tenant, "-", *dry, "--json", code=4, stdin=doc).stdout)
        assert error["error"]["code"] == "version_conflict"
        assert error["error"]["conflicts"] == [{"key": "svc/a", "expected": 1, "actual": 2}]
    assert _revision(kv, tenant) == 2
    assert _values(kv, tenant, "web") == {}  # all or nothing


def test_dry_run_and_write_agree_on_a_conflict_beside_a_missing_delete(kv: Kv, tenant: str) -> None:
    """The write reports its compare-and-set conflicts first (exit 4), and so does the dry run."""
    kv("set", tenant, "svc", "a:=1")
    kv("set", tenant, "svc", "a:=2")
    doc = _doc(values={"svc": {"a": 3}}, deletes={"web": ["nothing"]}, expect={"svc": {"a": 1}})
    for dry in (("--dry-run",), ()):
        error = json.loads(kv("apply", tenant, "-", *dry, "--json", code=4, stdin=doc).stdout)
        assert error["error"]["conflicts"] == [{"key": "svc/a", "expected": 1, "actual": 2}]
    missing = _doc(values={"svc": {"a": 3}}, deletes={"web": ["nothing"]})
    for dry in (("--dry-run",), ()):
        kv("apply", tenant, "-", *dry, code=3, stdin=missing)  # then the missing key
    assert _revision(kv, tenant) == 2


def test_an_empty_namespace_entry_is_skipped_by_the_dry_run_as_by_the_write(
    kv: Kv, tenant: str
) -> None:
    doc = _doc(values={"a": {"x": 1}, "b": {}}, deletes={"c": []})
    rows = json.loads(kv("apply", tenant, "-", "--dry-run", "-o", "json", stdin=doc).stdout)
    assert [(r["namespace"], r["key"], r["change"]) for r in rows["changes"]] == [
        ("a", "x", "added")
    ]
    kv("apply", tenant, "-", stdin=doc)
    assert _values(kv, tenant, "a") == {"x": 1}


def test_dry_run_writes_nothing_and_shows_the_diff(kv: Kv, tenant: str) -> None:
    kv(
        "schema",
        tenant,
        "svc",
        "--set",
        "-",
        stdin=_doc(keys={"pw": {"type": "str", "sensitive": True}}),
    )
    kv("set", tenant, "svc", "a:=1", "same=s", f"pw={SECRET}", "gone:=true")
    before = _revision(kv, tenant)
    doc = _doc(values={"svc": {"a": 2, "same": "s", "pw": SECRET}, "web": {"new": "n"}},
               deletes={"svc": ["gone"]}, expect={"svc": {"a": 1}})  # fmt: skip
    out = kv("apply", tenant, "-", "--dry-run", stdin=doc).stdout
    assert out.splitlines() == [
        f"dry run: nothing was written (5 key(s) would change in {tenant})",
        "namespace\tkey\tchange\told\tnew",
        "svc\ta\tchanged\t1\t2",
        "svc\tgone\tremoved\ttrue\t-",
        "svc\tpw\tchanged\t***\t***",  # never "unchanged": that would confirm a guess
        "svc\tsame\tunchanged\ts\ts",
        "web\tnew\tadded\t-\tn",
    ]
    assert SECRET not in out
    shown = json.loads(kv("apply", tenant, "-", "--dry-run", "--show-secrets", "-o", "json",
                          stdin=doc).stdout)  # fmt: skip
    assert (shown["dry_run"], shown["tenant"]) == (True, tenant)
    pw = next(r for r in shown["changes"] if r["key"] == "pw")
    assert (pw["change"], pw["new"]) == ("unchanged", SECRET)
    assert _revision(kv, tenant) == before
    assert _values(kv, tenant, "web") == {}
    missing = _doc(values={"web": {"x": 1}}, deletes={"svc": ["nope"]})
    assert "svc/nope" in kv("apply", tenant, "-", "--dry-run", code=3, stdin=missing).stderr
    kv("apply", tenant, "-", code=3, stdin=missing)
    assert _revision(kv, tenant) == before


def test_a_missing_tenant_is_created_unless_no_create(kv: Kv, tenant: str) -> None:
    doc = _doc(values={"svc": {"a": 1}})
    for dry in ((), ("--dry-run",)):
        kv("apply", tenant, "-", "--no-create", *dry, code=3, stdin=doc)
    kv("apply", tenant, "-", code=3, stdin=_doc(values={"svc": {"a": 1}}, create=False))
    kv("tenants", tenant, code=3)
    kv("apply", tenant, "-", "--dry-run", stdin=doc)
    kv("tenants", tenant, code=3)
    kv("apply", tenant, "-", stdin=doc)
    assert _revision(kv, tenant) == 1


def test_schema_problems_of_every_namespace_are_listed_at_once(kv: Kv, tenant: str) -> None:
    kv("schema", tenant, "svc", "--set", "-", stdin=_doc(keys={"port": {"type": "int"}}))
    web = _doc(keys={"mode": {"choices": ["a", "b"]}, "n": {"type": "int", "min": 1}})
    kv("schema", tenant, "web", "--set", "-", stdin=web)
    before = _revision(kv, tenant)
    doc = _doc(values={"svc": {"port": "http"}, "web": {"mode": "c", "n": 0, "ok": 1}})
    for dry in ((), ("--dry-run",)):
        failed = kv("apply", tenant, "-", *dry, code=5, stdin=doc)
        lines = failed.stderr.splitlines()
        assert len(lines) == 3, failed.stderr
        for name in ("svc/port", "web/mode", "web/n"):
            assert any(line.startswith(f"error: {name}: ") for line in lines), failed.stderr
        error = json.loads(kv("apply", tenant, "-", *dry, "-o", "json", code=5, stdin=doc).stdout)
        problems = error["error"]["problems"]
        assert sorted(p["key"] for p in problems) == ["svc/port", "web/mode", "web/n"]
    assert _revision(kv, tenant) == before
    assert _values(kv, tenant, "web") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[1, 2]", "expected an object of values, deletes, expect, reason, create, got an array"),
        (_doc(values={"svc": {"a": 1}}, extra=SECRET), "unknown field 'extra'"),
        (_doc(values={"svc": SECRET}), "values.svc: expected an object of keys, got a string"),
        (_doc(values=[SECRET]), "values: expected an object of namespaces, got an array"),
        (
            _doc(values={"svc": {"a": 1}}, expect={"svc": {"a": SECRET}}),
            "expect.svc.a: expected an integer version, got a string",
        ),
        (
            _doc(values={"svc": {"a": 1}}, expect={"svc": {"a": 1.5}}),
            "expect.svc.a: expected an integer version, got a number",
        ),
        (
            _doc(values={"svc": {"a": 1}}, expect={"svc": {"a": True}}),
            "expect.svc.a: expected an integer version, got a boolean",
        ),
        (_doc(deletes={"svc": "a"}), "deletes.svc: expected an array of key names"),
        (_doc(values={"svc": {"a": 1}}, reason=3), "reason: expected a string, got a number"),
        (_doc(values={"svc": {"a": 1}}, create="yes"), "create: expected true or false"),
        ('{"values": {"svc": {"a": "' + SECRET, "not valid JSON"),
        (_doc(values={}), "at least one key"),
        (_doc(values={"svc": {"a": 1}}, expect={"web": {"b": 1}}), "not in the change set"),
        (_doc(values={"svc": {"a": 1}}, deletes={"svc": ["a"]}), "'a'"),
        (_doc(values={"bad/ns": {"a": SECRET}}), "invalid namespace name 'bad/ns'"),
        ("{" * 100 + "}" * 100, "nested deeper than 64 levels"),
        (_doc(values={"svc": {"a": json.loads("[" * 65 + "]" * 65)}}), "nested deeper than 64"),
    ],
)
def test_a_bad_document_is_exit_5_with_a_clear_message(
    kv: Kv, tenant: str, text: str, says: str
) -> None:
    for dry in ((), ("--dry-run",)):
        failed = kv("apply", tenant, "-", *dry, code=5, stdin=text)
        message = " ".join(failed.stderr.split())  # rich wraps long lines
        assert says in message, message
        assert SECRET not in message
        assert "Traceback" not in failed.stderr
    kv("tenants", tenant, code=3)  # nothing written, not even the tenant


def test_bad_yaml_names_the_place_not_the_text(kv: Kv, tenant: str, tmp_path: Path) -> None:
    path = tmp_path / "changes.yml"
    path.write_text(f"values:\n  svc: {{a: {SECRET}\n  web: 1\n")
    failed = kv("apply", tenant, str(path), code=5)
    message = " ".join(failed.stderr.split())
    assert "not valid YAML at line 3" in message
    assert SECRET not in message
    path.write_text("values:\n  svc:\n    a: 1\nexpect:\n  svc:\n    a: '3'\n")
    assert "expect.svc.a: expected an integer version" in " ".join(
        kv("apply", tenant, str(path), code=5).stderr.split()
    )
    kv("apply", tenant, str(tmp_path / "missing.json"), code=5)
    kv("apply", tenant, "-", "--format", "env", code=5, stdin="A=1")
    kv("tenants", tenant, code=3)


def test_a_value_over_the_size_limit_is_exit_5(kv: Kv, tenant: str) -> None:
    big = "x" * (1024 * 1024 + 1)
    failed = kv("apply", tenant, "-", code=5, stdin=_doc(values={"svc": {"a": big}}))
    assert "over the limit" in failed.stderr
    kv("tenants", tenant, code=3)
