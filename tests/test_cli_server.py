"""The CLI through a ``kvconf serve`` (``--server``/``--token``, ``KVCONF_SERVER``): every
command gives the same output and exit code as against Redis, on a real server
subprocess over the embedded store and over a real redis-server; the CLI goes
through the server that owns an embedded data dir by itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.main import get_command
from typer.testing import CliRunner, Result

from kvconf.cli import app

from .redis_server import RedisServer, free_port
from .serve_process import ROOT, forget_tokens, serve_env, serving

runner = CliRunner()


@dataclass
class Server:
    base: str
    admin: str
    data: Path
    redis_url: str  # Redis the direct runs use (the server's own, for the redis backend)


@pytest.fixture(scope="module", params=["embedded", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One ``kvconf serve`` with an admin token per backend for the module."""
    shared: RedisServer = request.getfixturevalue("shared_redis")
    served = shared.url if request.param == "redis" else None
    admin = "cli-admin-" + uuid.uuid4().hex
    data = tmp_path_factory.mktemp("cli-server") / "data"
    try:
        with serving(data, served, admin) as (base, _proc):
            yield Server(base, admin, data, shared.url)
    finally:
        forget_tokens(shared.url)  # tokens left on the shared server close others' open mode


def _invoke(args: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return runner.invoke(app, args, env=env, input=stdin)


def direct(server: Server, *args: str, stdin: str | None = None) -> Result:
    return _invoke([*args, "--redis-url", server.redis_url], stdin=stdin)


def remote(
    server: Server, *args: str, token: str | None = None, stdin: str | None = None
) -> Result:
    tok = server.admin if token is None else token
    return _invoke([*args, "--server", server.base, "--token", tok], stdin=stdin)


def _new() -> str:
    return "c-" + uuid.uuid4().hex[:10]


_TS = re.compile(r"\d{4}-\d\d-\d\d[T ][\d:.]+(\+00:00|Z)?")
_EPOCH = re.compile(r"\b[0-9a-f]{12,}\b")
_ACTOR = re.compile(r"\badmin@127\.0\.0\.1\b|\banonymous\b")


def normal(text: str, names: dict[str, str]) -> str:
    """Output with what differs by nature (names, times, epochs, actors) replaced."""
    for name, alias in names.items():
        text = text.replace(name, alias)
    text = _TS.sub("TS", text)
    text = _EPOCH.sub("EPOCH", text)
    text = re.sub(r"memory_bytes: .*", "memory_bytes: M", text)
    return _ACTOR.sub("ACTOR", text)


# -- every command: the same through the server as against Redis ------------------------

SET = ["set", "{t}", "ns", "a=1", "b:=2"]
SET2 = ["set", "{t}", "ns", "a=3", "--reason", "again"]


@dataclass
class Case:
    """Steps run through one mode, then the command whose output is compared."""

    run: list[str]
    setup: list[list[str]] = field(default_factory=list)
    same: bool = True  # else: the same exit code, and ``contains`` in both outputs
    contains: str = ""


#: Every command of the app (and a few variants) through a server. A string
#: names the dedicated test; None: refused through a server (exit 2).
CASES: dict[str, Case | str | None] = {
    "get": Case(["get", "{t}", "ns"], [SET]),
    "get --effective": Case(["get", "{t}", "ns", "--effective", "-o", "json"], [SET]),
    "get missing": Case(["get", "{t}", "ns", "nope"], [SET]),
    "set": Case(SET),
    "set --dry-run": Case(["set", "{t}", "ns", "a=9", "--dry-run"], [SET]),
    "set conflict": Case(["set", "{t}", "ns", "a=9", "--expect-version", "7"], [SET]),
    "apply": Case(["apply", "{t}", "{changes}"], [SET]),
    "apply --dry-run": Case(["apply", "{t}", "{changes}", "--dry-run"], [SET]),
    "apply conflict": Case(["apply", "{t}", "{changes}"], [SET, SET2]),
    "apply --dry-run secrets": Case(  # sensitive keys masked the same way
        ["apply", "{t}", "{changes}", "--dry-run"],
        [
            SET,
            ["schema", "{t}", "ns", "--set", "{schema}"],
            ["schema", "{t}", "web", "--set", "{schema}"],
        ],
    ),
    "delete": Case(["delete", "{t}", "ns", "a"], [SET]),
    "history": Case(["history", "{t}", "ns", "a"], [SET, SET2]),
    "rollback": Case(["rollback", "{t}", "ns", "a", "1"], [SET, SET2]),
    "rollback --to-revision": Case(["rollback", "{t}", "--to-revision", "1"], [SET, SET2]),
    "rollback --to-revision --dry-run": Case(
        ["rollback", "{t}", "ns", "--to-revision", "1", "--dry-run"], [SET, SET2]
    ),
    "schema": Case(["schema", "{t}", "ns"], [SET, ["schema", "{t}", "ns", "--set", "{schema}"]]),
    "tenant list": Case(["tenant", "list", "-o", "value"], [SET], same=False, contains="{t}"),
    "tenant info": Case(["tenant", "info", "{t}"], [SET]),
    "tenant create": Case(["tenant", "create", "{t}"]),
    "tenant clone": Case(["tenant", "clone", "{t}", "{t2}", "--set", "ns/c=x"], [SET]),
    "tenant delete": Case(["tenant", "delete", "{t}"], [SET]),
    "tenant delete --hard": Case(
        ["tenant", "delete", "{t}", "--hard"], [SET], same=False, contains="hard-deleted"
    ),
    "tenant undelete": Case(["tenant", "undelete", "{t}"], [SET, ["tenant", "delete", "{t}"]]),
    "tenant list --include-deleted": Case(
        ["tenant", "list", "--include-deleted", "-o", "json"],
        [SET, ["tenant", "delete", "{t}"]],
        same=False,
        contains='"state":"deleted"',
    ),
    "tenants": Case(["tenants", "{t}"], [SET]),
    "diff": Case(["diff", "{t}", "--from", "1"], [SET, SET2]),
    "diff namespaces": Case(["diff", "{t}/ns", "{t2}/ns"], [SET]),
    "promote": Case(["promote", "{t}/ns", "{t2}/ns"], [SET]),
    "log": Case(["log", "{t}"], [SET, SET2]),
    "fleet": Case(["fleet", "{t}"], [SET]),
    "watch": "test_watch_follows_the_stream_of_the_server",
    "token create": Case(["token", "create", "{t}", "--grant", "{t}=read"], same=False),
    "token list": Case(
        ["token", "list"],
        [["token", "create", "{t}", "--grant", "{t}=read"]],
        same=False,
        contains="{t}",
    ),
    "token revoke": Case(
        ["token", "revoke", "{t}"], [["token", "create", "{t}", "--grant", "{t}=read"]]
    ),
    "serve": None,
    "snapshot save": "test_snapshots_are_saved_and_restored_on_the_server",
    "snapshot restore": "test_snapshots_are_saved_and_restored_on_the_server",
    "snapshot verify": "test_snapshots_are_listed_and_verified_on_the_server",
    "snapshot list": "test_snapshots_are_listed_and_verified_on_the_server",
    "snapshot recover": None,
    "export": Case(["export", "{t}", "-f", "json"], [SET]),
    "import": Case(["import", "{t}", "{file}"]),
    "import --preserve-versions": Case(
        ["import", "{t}", "{file}", "--preserve-versions"], same=False
    ),
    "bench": None,
    "stats": Case(["stats", "--json"], [SET], same=False, contains='"{t}"'),
    "stats TENANT": Case(["stats", "{t}"], [SET]),
}

_REFUSED = {
    "serve": ["serve"],
    "bench": ["bench"],
    "snapshot recover": ["snapshot", "recover"],
}


def _commands() -> set[str]:
    found: set[str] = set()

    def walk(group: object, prefix: str) -> None:
        for name, cmd in getattr(group, "commands", {}).items():
            full = f"{prefix}{name}"
            if hasattr(cmd, "commands"):
                walk(cmd, f"{full} ")
            else:
                found.add(full)

    walk(get_command(app), "")
    return found


def test_every_command_has_a_server_case() -> None:
    """A new CLI command fails here until it has a case through a server."""
    assert _commands() - set(CASES) == set()
    refused = {name for name, case in CASES.items() if case is None}
    assert refused == set(_REFUSED)
    for name, case in CASES.items():
        if isinstance(case, str):
            assert case in globals(), f"{name}: no test {case}"


def _fill(args: list[str], names: dict[str, str], tmp_path: Path) -> list[str]:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"keys": {"a": {"type": "str"}, "pw": {"sensitive": True}}}))
    data = tmp_path / "import.json"
    data.write_text(json.dumps({"namespaces": {"ns": {"a": "1", "n": 5}}}))
    changes = tmp_path / "changes.json"
    values = {"ns": {"a": "2"}, "web": {"a": "1", "pw": "s"}}
    changes.write_text(
        json.dumps({"values": values, "deletes": {"ns": ["b"]}, "expect": {"ns": {"a": 1}}})
    )
    out = []
    for arg in args:
        arg = arg.replace("{t2}", names["t2"]).replace("{t}", names["t"])
        arg = arg.replace("{changes}", str(changes))
        out.append(arg.replace("{schema}", str(schema)).replace("{file}", str(data)))
    return out


def _scenario(server: Server, case: Case, through: bool, tmp_path: Path) -> tuple[Result, dict]:
    names = {"t": _new(), "t2": _new()}
    call = remote if through else direct
    for step in case.setup:
        result = call(server, *_fill(step, names, tmp_path))
        assert result.exit_code == 0, (step, result.stdout, result.stderr)
    return call(server, *_fill(case.run, names, tmp_path)), names


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if isinstance(c, Case)))
def test_a_command_through_the_server_matches_redis(
    server: Server, name: str, tmp_path: Path
) -> None:
    case = CASES[name]
    assert isinstance(case, Case)
    want, want_names = _scenario(server, case, False, tmp_path)
    got, got_names = _scenario(server, case, True, tmp_path)
    assert got.exit_code == want.exit_code, (got.stdout, got.stderr, want.stderr)
    aliases = {want_names["t"]: "T", want_names["t2"]: "T2"}
    got_aliases = {got_names["t"]: "T", got_names["t2"]: "T2"}
    if case.same:
        assert normal(got.stdout, got_aliases) == normal(want.stdout, aliases)
        assert normal(got.stderr, got_aliases) == normal(want.stderr, aliases)
    elif case.contains:
        assert case.contains.replace("{t}", got_names["t"]) in got.stdout
        assert case.contains.replace("{t}", want_names["t"]) in want.stdout


@pytest.mark.parametrize("name", sorted(_REFUSED))
def test_local_commands_refuse_the_server_option(server: Server, name: str) -> None:
    result = _invoke([*_REFUSED[name], "--server", server.base])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--server" in result.stderr


def test_the_environment_names_the_server(server: Server) -> None:
    t = _new()
    assert remote(server, "set", t, "ns", "a=1").exit_code == 0
    env = {"KVCONF_SERVER": server.base, "KVCONF_TOKEN": server.admin}
    through_env = _invoke(["get", t, "ns", "a", "-o", "value"], env=env)
    assert (through_env.exit_code, through_env.stdout) == (0, "1\n")
    # an explicit --redis-url wins over KVCONF_SERVER: the tenant is not there
    on_redis = _invoke(["get", t, "ns", "a", "--redis-url", "memory://cli-env"], env=env)
    assert on_redis.exit_code == 3


def test_a_bad_token_is_exit_8(server: Server) -> None:
    result = remote(server, "tenant", "list", token="not-a-token")
    assert result.exit_code == 8
    assert "token" in result.stderr.lower()


def test_an_unreachable_server_is_exit_6() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _invoke(["get", "acme", "ns", "--server", url])
    assert result.exit_code == 6
    assert url in result.stderr


def test_a_server_url_must_be_http() -> None:
    result = _invoke(["get", "acme", "ns", "--server", "redis://127.0.0.1:1"])
    assert result.exit_code == 2


def test_a_scoped_token_sees_other_namespaces_as_missing(server: Server) -> None:
    t = _new()
    assert remote(server, "set", t, "ai-1", "a=1").exit_code == 0
    assert remote(server, "set", t, "ai-2", "a=2").exit_code == 0
    made = remote(server, "token", "create", _new(), "--grant", f"{t}/ai-1=write", "-o", "value")
    scoped = made.stdout.strip()
    assert remote(server, "get", t, "ai-1", "a", "-o", "value", token=scoped).stdout == "1\n"
    for args in (["get", t, "ai-2", "a"], ["set", t, "ai-2", "a=9"], ["history", t, "ai-2", "a"]):
        hidden = remote(server, *args, token=scoped)
        assert hidden.exit_code == 3, (args, hidden.stdout, hidden.stderr)
    info = remote(server, "tenant", "info", t, "-o", "json", token=scoped)
    assert json.loads(info.stdout)["namespaces"] == ["ai-1"]
    log = remote(server, "log", t, "-o", "json", token=scoped)
    assert {e["namespace"] for e in json.loads(log.stdout)} == {"ai-1"}
    reader = remote(server, "token", "create", _new(), "--grant", f"{t}=read", "-o", "value")
    refused = remote(server, "set", t, "ai-1", "a=5", token=reader.stdout.strip())
    assert refused.exit_code == 9, (refused.stdout, refused.stderr)


def test_a_served_data_dir_is_reached_through_its_server(server: Server) -> None:
    """``--data-dir D`` while ``kvconf serve --data-dir D`` runs: through that server."""
    t = _new()
    where = ["--data-dir", str(server.data)]
    if not (server.data / "LOCK").exists() or "serve" not in (server.data / "LOCK").read_text():
        pytest.skip("the redis-backed server does not own its data dir")
    written = _invoke(["set", t, "ns", "a=1", *where, "--token", server.admin])
    assert written.exit_code == 0, (written.stdout, written.stderr)
    assert remote(server, "get", t, "ns", "a", "-o", "value").stdout == "1\n"
    log = _invoke(["log", t, "-o", "json", *where, "--token", server.admin])
    assert [e["actor"] for e in json.loads(log.stdout)] == ["admin@127.0.0.1"]
    anonymous = _invoke(["get", t, "ns", *where])
    assert anonymous.exit_code == 8
    assert "--token" in anonymous.stderr
    assert "KVCONF_TOKEN" in anonymous.stderr
    # an explicit --redis-url wins over the served data dir
    other = _invoke(["get", t, "ns", *where, "--redis-url", "memory://cli-served"])
    assert other.exit_code == 3


def test_snapshots_are_saved_and_restored_on_the_server(server: Server) -> None:
    t = _new()
    assert remote(server, "set", t, "ns", "a=1").exit_code == 0
    saved = remote(server, "snapshot", "save", "-t", t, "--label", "cli", "--json")
    assert saved.exit_code == 0, (saved.stdout, saved.stderr)
    info = json.loads(saved.stdout)
    assert [x["tenant"] for x in info["tenants"]] == [t]
    assert info["keys"] == 1
    assert info["size"] > 0
    assert remote(server, "set", t, "ns", "a=2").exit_code == 0
    restored = remote(server, "snapshot", "restore", info["path"], "-t", t)
    assert restored.exit_code == 0, (restored.stdout, restored.stderr)
    assert t in restored.stdout
    assert remote(server, "get", t, "ns", "a", "-o", "value").stdout == "1\n"
    local_file = remote(server, "snapshot", "restore", "/tmp/x.kvsnap", "-t", t)
    assert local_file.exit_code == 2  # a usage error, as for verify
    assert "local" in local_file.stderr


def _saved(server: Server, tenant: str) -> dict[str, Any]:
    assert remote(server, "set", tenant, "ns", "a=1").exit_code == 0
    saved = remote(server, "snapshot", "save", "-t", tenant, "--json")
    assert saved.exit_code == 0, (saved.stdout, saved.stderr)
    doc: dict[str, Any] = json.loads(saved.stdout)
    return doc


def test_snapshots_are_listed_and_verified_on_the_server(server: Server) -> None:
    t, other = _new(), _new()
    saved, other_saved = _saved(server, t), _saved(server, other)
    name, other_name = saved["path"], other_saved["path"]
    listed = remote(server, "snapshot", "list", "-t", t, "--json")
    assert listed.exit_code == 0, (listed.stdout, listed.stderr)
    [info] = json.loads(listed.stdout)
    assert (info["path"], info["size"], info["format"], info["keys"]) == (
        name, saved["size"], saved["format"], 1,
    )  # fmt: skip
    assert [x["tenant"] for x in info["tenants"]] == [t]
    table = remote(server, "snapshot", "list", "-t", t, "-t", other)
    assert name in table.stdout
    assert other_name in table.stdout
    env = {"KVCONF_SERVER": server.base, "KVCONF_TOKEN": server.admin}
    every = _invoke(["snapshot", "list", "--json"], env=env)  # every tenant the token sees
    assert {name, other_name} <= {i["path"] for i in json.loads(every.stdout)}

    ok = remote(server, "snapshot", "verify", name)
    assert ok.exit_code == 0, (ok.stdout, ok.stderr)
    assert ok.stdout.startswith(f"OK {name}: format {saved['format']}, created ")
    assert t in ok.stdout
    checked = json.loads(remote(server, "snapshot", "verify", name, "-t", t, "--json").stdout)
    assert checked["verified"] is True
    assert (checked["path"], checked["size"], checked["keys"]) == (name, saved["size"], 1)

    # a token of the other tenant learns nothing of t's snapshots
    made = remote(server, "token", "create", _new(), "--grant", f"{other}=admin", "-o", "value")
    scoped = made.stdout.strip()
    mine = json.loads(remote(server, "snapshot", "list", "--json", token=scoped).stdout)
    assert [i["path"] for i in mine] == [other_name]
    assert remote(server, "snapshot", "list", "-t", t, token=scoped).exit_code == 3
    for args in (["snapshot", "verify", name], ["snapshot", "verify", name, "-t", other]):
        hidden = remote(server, *args, token=scoped)
        assert hidden.exit_code == 3, (args, hidden.stdout, hidden.stderr)
        assert t not in hidden.stdout + hidden.stderr
    assert remote(server, "snapshot", "verify", name, "-t", t, token=scoped).exit_code == 3
    reader = remote(server, "token", "create", _new(), "--grant", f"{t}=read", "-o", "value")
    refused = remote(server, "snapshot", "list", token=reader.stdout.strip())
    assert refused.exit_code == 9, (refused.stdout, refused.stderr)

    missing = remote(server, "snapshot", "verify", "kvconf-nope.kvsnap", "-t", t)
    assert missing.exit_code == 3
    path = server.data / "snapshots" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    corrupt = remote(server, "snapshot", "verify", name, "-t", t, "--json")
    assert corrupt.exit_code == 7, (corrupt.stdout, corrupt.stderr)
    assert json.loads(corrupt.stdout)["error"]["code"] == "snapshot_corrupt"
    plain = remote(server, "snapshot", "save", "-t", t)  # the summary printed, not JSON
    assert plain.exit_code == 0, (plain.stdout, plain.stderr)
    assert plain.stdout.startswith("saved kvconf-")


def test_a_file_of_several_tenants_tells_a_tenant_nothing_of_the_others(
    server: Server, tmp_path: Path
) -> None:
    """A tenant admin sees its own part of a shared file: not its size, not who else is in it.

    Background snapshots hold every tenant: the whole file's size would tell
    how much the others hold, and a damaged file's details would name them
    and the server's path.
    """
    mine, theirs = _new(), _new()
    local = ["--data-dir", str(tmp_path / "data")]
    for tenant in (mine, theirs):
        assert _invoke(["set", tenant, "ns", "a=1", *local]).exit_code == 0
        assert remote(server, "set", tenant, "ns", "a=1").exit_code == 0
    saved = _invoke(["snapshot", "save", "-t", mine, "-t", theirs, "--json",
                     "--dir", str(server.data / "snapshots"), *local])  # fmt: skip
    assert saved.exit_code == 0, (saved.stdout, saved.stderr)
    info = json.loads(saved.stdout)  # one file holding both
    name = Path(info["path"]).name
    made = remote(server, "token", "create", _new(), "--grant", f"{mine}=admin", "-o", "value")
    token = made.stdout.strip()
    listed = remote(server, "snapshot", "list", "-t", mine, "--json", token=token)
    assert listed.exit_code == 0, (listed.stdout, listed.stderr)
    [shown] = [i for i in json.loads(listed.stdout) if i["path"] == name]
    assert [x["tenant"] for x in shown["tenants"]] == [mine]
    assert shown["size"] == 0  # not told
    verified = remote(server, "snapshot", "verify", name, "--json", token=token)
    assert verified.exit_code == 0, (verified.stdout, verified.stderr)
    assert theirs not in verified.stdout
    assert json.loads(verified.stdout)["size"] == 0
    path = server.data / "snapshots" / name
    data = bytearray(path.read_bytes())
    data[24] ^= 0xFF  # in the body, past the header: the footer still lists the file
    path.write_bytes(bytes(data))
    for args in (["verify", name], ["restore", name, "-t", mine, "--dry-run"]):
        damaged = remote(server, "snapshot", *args, "--json", token=token)
        assert damaged.exit_code == 7, (args, damaged.stdout, damaged.stderr)
        assert json.loads(damaged.stdout)["error"]["code"] == "snapshot_corrupt"
        assert theirs not in damaged.stdout + damaged.stderr
        assert str(server.data) not in damaged.stdout + damaged.stderr


def test_kvconf_server_alone_gives_way_to_a_local_file(server: Server, tmp_path: Path) -> None:
    """With KVCONF_SERVER set, a local file or --dir named on the command line is read here."""
    tenant = _new()
    local = ["--data-dir", str(tmp_path / "data")]
    assert _invoke(["set", tenant, "ns", "a=1", *local]).exit_code == 0
    saved = _invoke(["snapshot", "save", "-t", tenant, "--dir", str(tmp_path), "--json", *local])
    assert saved.exit_code == 0, (saved.stdout, saved.stderr)
    path = next(tmp_path.glob("*.kvsnap"))
    env = {"KVCONF_SERVER": server.base, "KVCONF_TOKEN": server.admin}
    checked = _invoke(["snapshot", "verify", str(path)], env=env)
    assert checked.exit_code == 0, (checked.stdout, checked.stderr)
    assert checked.stdout.startswith(f"OK {path}")
    listed = _invoke(["snapshot", "list", "--dir", str(tmp_path), "--json"], env=env)
    assert listed.exit_code == 0, (listed.stdout, listed.stderr)
    assert [i["path"] for i in json.loads(listed.stdout)] == [str(path)]


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot", "verify", "/tmp/x.kvsnap"],
        ["snapshot", "verify", ".."],
        ["snapshot", "verify", "x.kvsnap", "--data-dir", "/tmp"],
        ["snapshot", "list", "--dir", "/tmp"],
        ["snapshot", "list", "--data-dir", "/tmp"],
    ],
)
def test_local_paths_are_usage_errors_through_the_server(server: Server, args: list[str]) -> None:
    result = remote(server, *args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert ("local" in result.stderr) or ("name of a snapshot" in result.stderr)


def test_kvconf_data_dir_is_no_error_through_the_server(server: Server) -> None:
    """``KVCONF_DATA_DIR`` is a local default, not a choice made on the command line."""
    env = {"KVCONF_DATA_DIR": "/nonexistent", "KVCONF_SERVER": server.base,
           "KVCONF_TOKEN": server.admin}  # fmt: skip
    result = _invoke(["snapshot", "list", "-t", _new()], env=env)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert f"no snapshots on {server.base}" in result.stdout


def _watch(args: list[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", "from kvconf.cli import main; main()", "watch", *args]
    return subprocess.Popen(
        cmd, env=serve_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    out = []
    deadline = time.monotonic() + 20
    while len(out) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line.rstrip("\n"))
    return out


def _follow(server: Server, through: bool) -> tuple[list[str], str]:
    t = _new()
    call = remote if through else direct
    assert call(server, "set", t, "ns", "a=1").exit_code == 0
    mode = (["--server", server.base, "--token", server.admin] if through
            else ["--redis-url", server.redis_url])  # fmt: skip
    proc = _watch([t, *mode])
    try:
        first = _lines(proc, 2)
        assert call(server, "set", t, "ns", "a=2", "--reason", "r").exit_code == 0
        return first + _lines(proc, 1), t
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert "Traceback" not in err, err


def test_watch_follows_the_stream_of_the_server(server: Server) -> None:
    want, want_t = _follow(server, through=False)
    got, got_t = _follow(server, through=True)
    assert len(got) == 3, got
    assert normal("\n".join(got), {got_t: "T"}) == normal("\n".join(want), {want_t: "T"})


def test_a_server_needing_a_token_says_so(server: Server) -> None:
    result = _invoke(["get", "acme", "ns", "--server", server.base])
    assert result.exit_code == 8
    assert "--token" in result.stderr
    assert httpx.get(f"{server.base}/healthz").status_code == 200


def test_a_data_dir_served_on_ipv6_loopback_is_reached_too(tmp_path: Path) -> None:
    """The lock names ``http://[::1]:port`` (bracketed), so the CLI can follow it."""
    from kvconf._snapshot.embedded import serving_url

    data, port = tmp_path / "data", free_port()
    args = ["serve", "--host", "::1", "--port", str(port), "--data-dir", str(data)]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from kvconf.cli import main; main()", *args],
        env=serve_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while serving_url(data) is None:
            assert proc.poll() is None, "kvconf serve exited"
            assert time.monotonic() < deadline, "kvconf serve did not take the data dir"
            time.sleep(0.1)
        assert serving_url(data) == f"http://[::1]:{port}"
        t = _new()
        written = _invoke(["set", t, "ns", "a=1", "--data-dir", str(data)])
        assert written.exit_code == 0, (written.stdout, written.stderr)
        read = _invoke(["get", t, "ns", "a", "-o", "value", "--data-dir", str(data)])
        assert read.stdout == "1\n"
    finally:
        proc.terminate()
        proc.wait(10)
