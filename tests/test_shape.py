"""Guards of the code's shape: no import cycles, internals behind their shims, a
complete public surface, Redis names from one module, and a CLI that imports
the server only when it serves."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import httpx
import pytest

import kvconf
from kvconf import Schema, Store
from kvconf._redis.names import TENANTS_KEY, TenantKeys

from .redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kvconf"


def _modules() -> dict[str, Path]:
    """Every module of kvconf, the app (kvconf.api) included, by dotted name."""
    found: dict[str, Path] = {}
    for dirpath, _dirs, files in os.walk(PACKAGE, followlinks=True):
        for name in files:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                parts = path.relative_to(ROOT).with_suffix("").parts
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of kvconf that ``module`` imports anywhere (functions included), not for typing."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in known and m != module}


def test_no_import_cycles() -> None:
    modules = _modules()
    known = set(modules)
    graph = {m: _imports(m, p, known) for m, p in modules.items()}
    # A package's __init__ re-exporting its children is not a cycle through them.
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    # kvconf/__init__ imports its public modules, which import nothing back from it.
    assert cycles == [], cycles


def test_the_library_never_imports_the_app() -> None:
    modules = _modules()
    known = set(modules)
    for name, path in modules.items():
        if name.startswith("kvconf.api"):
            continue
        assert not {m for m in _imports(name, path, known) if m.startswith("kvconf.api")}, name


# redis-py's undocumented attributes kvconf reaches for, beyond underscored ones.
_REDIS_INTERNALS = {"connection_kwargs", "nodes_manager"}
# namedtuple's documented methods start with an underscore too.
_NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make"}
_SHIMS = {PACKAGE / "_redis" / "internals.py", ROOT / "api" / "_starlette.py"}


def _own_private_names(modules: dict[str, Path]) -> set[str]:
    """Every underscored name kvconf defines itself (attributes, functions, classes, slots)."""
    names: set[str] = set()
    for path in modules.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"_[a-z]\w*", node.value):  # __slots__ entries
                    names.add(node.value)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
    return names


def test_redis_and_starlette_internals_only_in_their_shims() -> None:
    modules = _modules()
    own = _own_private_names({m: p for m, p in modules.items() if p.resolve() not in _SHIMS})
    offenders: list[str] = []
    for path in {p.resolve() for p in modules.values()} - _SHIMS:
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
            ):
                name = str(node.args[1].value)
            elif (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.split(".")[0] in ("redis", "starlette", "fastapi")
                and any(p.startswith("_") for p in node.module.split(".")[1:])
            ):
                offenders.append(f"{path.name}: imports {node.module}")
            if name is None:
                continue
            foreign_private = (
                name.startswith("_") and not name.startswith("__") and name not in own | _NAMEDTUPLE
            )
            if foreign_private or name in _REDIS_INTERNALS:
                offenders.append(f"{path.relative_to(ROOT.resolve())}:{node.lineno}: {name}")
    assert not offenders, "\n".join(offenders)


def test_all_is_complete_in_both_directions() -> None:
    public = sorted(
        name
        for name, value in vars(kvconf).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )
    assert [n for n in kvconf.__all__ if n != "__version__"] == public
    assert all(hasattr(kvconf, name) for name in kvconf.__all__)


def test_fleet_is_a_function_not_a_shadowed_module() -> None:
    assert isinstance(kvconf.fleet, types.FunctionType)
    assert not (PACKAGE / "fleet.py").exists()
    assert "kvconf.fleet" not in sys.modules


def test_the_cli_imports_the_server_and_bench_only_when_asked() -> None:
    code = (
        "import sys, kvconf.cli\n"
        "heavy = ('fastapi', 'uvicorn', 'starlette', 'kvconf.api', 'kvconf.bench')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_sections_listed_by_the_cli_are_the_bench_sections() -> None:
    from kvconf.bench import SECTIONS
    from kvconf.cli._bench import SECTIONS as CLI_SECTIONS

    assert CLI_SECTIONS == SECTIONS


def test_a_user_package_named_api_does_not_break_kvconf(tmp_path: Path) -> None:
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "__init__.py").write_text("raise ImportError('the user api package')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVCONF_")}
    env["PYTHONPATH"] = str(tmp_path)
    cli = [sys.executable, "-c", "from kvconf.cli import main; main()"]
    done = subprocess.run([*cli, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    port = free_port()
    env["KVCONF_DATA_DIR"] = str(tmp_path / "data")
    serve = [*cli, "serve", "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(serve, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "kvconf serve did not answer"
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kind_of(tk: TenantKeys, key: str) -> str | None:
    """Which TenantKeys name ``key`` is, or None when no builder makes it."""
    fixed = {tk.rev: "rev", tk.epoch: "epoch", tk.log: "log", tk.meta: "meta",
             tk.namespaces: "namespaces", tk.schema: "schema", tk.fleet: "fleet"}  # fmt: skip
    if key in fixed:
        return fixed[key]
    for kind, builder in (("trash", tk.trash), ("ns", tk.ns), ("hist", tk.hist)):
        prefix = builder("")
        if key.startswith(prefix) and key[len(prefix) :]:
            return kind
    return None


async def test_scripts_build_only_the_names_of_the_names_module(store: Store, tenant: str) -> None:
    tk = TenantKeys(tenant)
    await store.set(tenant, "ai-12", "port", 80)
    await store.commit_across(tenant, {"n1": {"k": 1}, "_defaults": {"k": 0}})
    await store.set_schema(tenant, "ai-12", Schema(keys={}))
    seen: set[str] = set()

    async def check() -> None:
        keys = [k.decode() async for k in store.redis.scan_iter(match=f"{tk.base}:*")]
        unknown = [k for k in keys if _kind_of(tk, k) is None]
        assert unknown == []
        seen.update(str(_kind_of(tk, k)) for k in keys)

    await check()
    await store.delete_tenant(tenant)  # soft: namespaces move to the trash
    await check()
    await store.undelete_tenant(tenant)
    await check()
    assert {"rev", "epoch", "log", "meta", "namespaces", "schema", "ns", "hist", "trash"} <= seen
    assert await store.redis.sismember(TENANTS_KEY, tenant)


@pytest.mark.slow
def test_the_wheel_claims_only_kvconf_and_ships_its_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("kvconf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"kvconf"}, tops
    for shipped in (
        "kvconf/api/app.py",
        "kvconf/api/console/index.html",
        "kvconf/_redis/lua/write.lua",
        "kvconf/_watch/_speedups.pyi",
        "kvconf/py.typed",
    ):
        assert shipped in names, shipped
