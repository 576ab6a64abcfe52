"""Periodic full exports: atomic files, masking, retention, on both backends."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from kvconf import _jobs
from kvconf.config import Settings
from kvconf.export import export_once
from kvconf.models import KeySpec, Schema
from kvconf.store import Store

from .api_helpers import ADMIN, client, running_app


async def _seed(store: Store, tenant: str) -> None:
    await store.set_schema(tenant, "svc", Schema(keys={"password": KeySpec(sensitive=True)}))
    await store.set_many(tenant, "svc", {"password": f"hunter2-{tenant}", "timeout": 30})
    await store.set(tenant, "svc", "timeout", 31)


async def _wait_for(path: Path, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if path.exists():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def test_serve_exports_periodically(backend_url: str, tenant: str, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    async with (
        running_app(
            backend_url, export_every=0.2, export_dir=out, export_keep=2, admin_token=ADMIN
        ) as app,
        client(app, ADMIN) as http,
    ):
        await _seed(app.state.store, tenant)
        current = out / "kvconf-full.json"
        await _wait_for(current)
        await asyncio.sleep(1.0)  # several runs: retention applies
        doc = json.loads(current.read_bytes())
        metrics = (await http.get("/metrics")).text
    assert stat.S_IMODE(current.stat().st_mode) == 0o600
    mine = doc["tenants"][tenant]
    assert mine["revision"] == 3
    assert mine["namespaces"]["svc"]["timeout"]["value"] == 31
    assert mine["namespaces"]["svc"]["timeout"]["version"] == 2
    assert mine["namespaces"]["svc"]["password"]["value"] == "***"
    assert f"hunter2-{tenant}" not in current.read_text()  # other tests share the server
    copies = sorted(out.glob("kvconf-full-*.json"))
    assert len(copies) == 2
    assert all(stat.S_IMODE(c.stat().st_mode) == 0o600 for c in copies)
    assert not list(out.glob(".*.tmp"))
    assert 'kvconf_scheduled_job_last_ok{job="export"} 1.0' in metrics
    assert 'kvconf_scheduled_job_last_run_age_seconds{job="export"}' in metrics


async def test_export_yaml_with_secrets(store: Store, tenant: str, tmp_path: Path) -> None:
    await _seed(store, tenant)
    cfg = Settings(export_dir=tmp_path, export_format="yaml", export_secrets=True)
    path = await export_once(store, cfg)
    assert path == tmp_path / "kvconf-full.yaml"
    doc = yaml.safe_load(path.read_text())
    assert doc["secrets"] is True
    assert doc["tenants"][tenant]["namespaces"]["svc"]["password"]["value"] == f"hunter2-{tenant}"


async def test_failed_export_is_recorded(store: Store, tenant: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    async with (
        running_app(
            store.settings.redis_url or "", export_every=0.1, export_dir=blocker / "x"
        ) as app,
        client(app) as http,
    ):
        for _ in range(100):
            status = _jobs.JOBS.get("export")
            if status is not None and status.failures:
                break
            await asyncio.sleep(0.05)
        text = (await http.get("/metrics")).text
    assert 'kvconf_scheduled_job_last_ok{job="export"} 0.0' in text


def test_export_settings_refuse_bad_durations() -> None:
    from kvconf import InvalidInput

    with pytest.raises(InvalidInput, match="duration"):
        Settings.from_env({"KVCONF_EXPORT_EVERY": "nan"})
    assert Settings.from_env({"KVCONF_EXPORT_EVERY": "1h30m"}).export_every == 5400.0


def test_one_exporter_per_directory(tmp_path: Path) -> None:
    from kvconf.export import exporter_lock

    first = exporter_lock(tmp_path)
    assert first is not None
    assert exporter_lock(tmp_path) is None  # another worker stands by
    os.close(first)
    again = exporter_lock(tmp_path)
    assert again is not None
    os.close(again)


async def test_the_export_service_stops_when_a_cancellation_is_swallowed(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py may swallow a cancellation inside a command: one cancel must not hang."""
    from kvconf import export

    swallowed: list[bool] = []

    async def swallowing(*_args: object) -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:  # the next cancellation goes through
                raise
            swallowed.append(True)  # the first is lost, as inside a redis-py command

    monkeypatch.setattr(export, "export_once", swallowing)
    settings = Settings(export_every=0.001, export_dir=tmp_path / "out")
    guard = asyncio.timeout(10)
    async with guard, export.export_service(store, settings):
        await asyncio.sleep(0.2)
    assert swallowed  # its first cancellation was lost ...
    assert not guard.expired()  # ... and yet it stopped by itself, not by the guard
