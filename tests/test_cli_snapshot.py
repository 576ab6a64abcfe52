"""CLI: kvconf snapshot save / verify / list / restore, on both backends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from kvconf import Store
from kvconf.cli import app

runner = CliRunner()


async def _cli(*args: str) -> tuple[int, str, str]:
    # the CLI runs its own event loop: give it a thread of its own
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    if result.exit_code == 1:
        raise AssertionError(result.exception)
    return result.exit_code, result.stdout, result.stderr


async def test_save_verify_list_restore(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    await store.set_many(tenant, "ai-1", {"timeout": 30, "model": "m1"})
    await store.set(tenant, "ai-1", "timeout", 31)
    url = ["--redis-url", backend_url]
    code, out, err = await _cli(
        "snapshot", "save", "-t", tenant, "--dir", str(tmp_path), "--json", *url
    )
    assert code == 0, err
    saved = json.loads(out)
    assert [t["tenant"] for t in saved["tenants"]] == [tenant]
    path = saved["path"]

    code, out, _ = await _cli("snapshot", "verify", path)
    assert code == 0
    assert "OK" in out
    assert tenant in out
    code, out, _ = await _cli("snapshot", "verify", path, "--json")
    assert json.loads(out)["keys"] == 2

    code, out, _ = await _cli("snapshot", "list", "--dir", str(tmp_path), "--json")
    assert [i["path"] for i in json.loads(out)] == [path]
    code, out, _ = await _cli("snapshot", "list", "--dir", str(tmp_path))
    assert "kvconf-" in out

    await store.set(tenant, "ai-1", "timeout", 99)
    rev = await store.revision(tenant)
    code, out, _ = await _cli("snapshot", "restore", path, "--dry-run", *url)
    assert code == 0
    assert "dry run" in out
    assert await store.revision(tenant) == rev
    safety = tmp_path / "safety"
    code, out, err = await _cli(
        "snapshot", "restore", path, "--json", "--data-dir", str(safety), *url
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["tenants"][0]["revision"] == rev + 1
    assert report["tenants"][0]["changed"] == 1
    assert report["safety_snapshot"].startswith(str(safety / "snapshots"))
    assert (await store.get(tenant, "ai-1", "timeout")).value == 31

    code, out, _ = await _cli(
        "snapshot", "restore", path, "--as", f"{tenant}-b", "-t", tenant, *url
    )
    assert code == 0
    assert f"{tenant}-b" in out
    assert (await store.get(f"{tenant}-b", "ai-1", "model")).value == "m1"


async def test_bad_files_exit_7_and_leave_redis_alone(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    await store.set(tenant, "ns", "k", 1)
    code, out, _ = await _cli(
        "snapshot", "save", "-t", tenant, "--dir", str(tmp_path), "--json", "--redis-url",
        backend_url,
    )  # fmt: skip
    data = bytearray(Path(json.loads(out)["path"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.kvsnap"
    bad.write_bytes(bytes(data))
    await store.set(tenant, "ns", "k", 2)
    code, _, err = await _cli("snapshot", "verify", str(bad))
    assert code == 7
    assert "corrupt" in err
    code, out, _ = await _cli("snapshot", "restore", str(bad), "--json", "--redis-url", backend_url)
    assert code == 7
    assert json.loads(out)["error"]["code"] == "snapshot_corrupt"
    assert (await store.get(tenant, "ns", "k")).value == 2
    code, _, err = await _cli("snapshot", "verify", str(tmp_path / "missing.kvsnap"))
    assert code == 3
    code, _, err = await _cli("snapshot", "save", "-t", "no-such-t", "--redis-url", backend_url)
    assert code == 3
    code, _, err = await _cli("snapshot", "restore", str(bad), "--mode", "bogus")
    assert code == 5


async def test_list_and_verify_show_the_chosen_tenants(
    store: Store, tenant: str, backend_url: str, tmp_path: Path
) -> None:
    other = f"{tenant}-other"
    await store.set(tenant, "ns", "k", 1)
    await store.set_many(other, "ns", {"k": 1, "j": 2})
    data = ["--data-dir", str(tmp_path)]
    code, out, err = await _cli(
        "snapshot", "save", "-t", tenant, "-t", other, "--json", *data, "--redis-url", backend_url
    )  # fmt: skip
    assert code == 0, err
    name = Path(json.loads(out)["path"]).name
    code, out, _ = await _cli("snapshot", "list", "-t", other, "--json", *data)
    [info] = json.loads(out)
    assert ([t["tenant"] for t in info["tenants"]], info["keys"]) == ([other], 2)
    code, out, _ = await _cli("snapshot", "list", "-t", "nobody", *data)
    assert (code, out) == (0, f"no snapshots in {tmp_path / 'snapshots'}\n")
    # a bare name (as a save through a server prints it) is found in <data dir>/snapshots
    code, out, _ = await _cli("snapshot", "verify", name, "-t", tenant, "--json", *data)
    assert code == 0
    assert ([t["tenant"] for t in json.loads(out)["tenants"]], json.loads(out)["keys"]) == (
        [tenant], 1,
    )  # fmt: skip
    code, _, err = await _cli("snapshot", "verify", name, "-t", "nobody", *data)
    assert code == 3
    assert "nobody" in err
