"""compose.yaml and Dockerfile stay consistent with what kvconf reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kvconf.config import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
SETTINGS_ENV = {f"KVCONF_{f.name.upper()}" for f in msgspec.structs.fields(Settings)}


def _env_names_in_text(text: str) -> set[str]:
    return set(re.findall(r"\b(KVCONF_[A-Z_]+)\b", text))


def test_env_names_are_real_settings() -> None:
    for path in (COMPOSE, ROOT / "Dockerfile"):
        names = _env_names_in_text(path.read_text())
        assert names, path
        assert names <= SETTINGS_ENV, f"{path.name}: unknown {names - SETTINGS_ENV}"


def _compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_structure() -> None:
    services = _compose()["services"]
    redis, api = services["redis"], services["api"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    events = command[command.index("--notify-keyspace-events") + 1]
    assert {"K", "h", "g"} <= set(events)
    assert "redis-cli" in redis["healthcheck"]["test"]
    env = api["environment"]
    assert set(env) <= SETTINGS_ENV
    assert env["KVCONF_REDIS_URL"].startswith("redis://redis:")
    assert env["KVCONF_HOST"] == "0.0.0.0"
    assert "KVCONF_ADMIN_TOKEN" in env  # a non-loopback server must have auth
    Settings.from_env({k: v for k, v in env.items() if "${" not in v})  # values parse
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert any(v.endswith(":/data") for v in api["volumes"])


def _compose_command() -> list[str] | None:
    """``docker compose`` where the plugin exists, else the standalone ``docker-compose``."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


def test_docker_compose_config_validates() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("no compose-capable client (docker compose or docker-compose)")
    env = {"KVCONF_ADMIN_TOKEN": "test-token", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    result = subprocess.run(
        [*compose, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [*compose, "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True, text=True, check=False, env={"PATH": env["PATH"]},
    )  # fmt: skip
    assert missing.returncode != 0, "compose must refuse to start without an admin token"
    assert "KVCONF_ADMIN_TOKEN" in missing.stderr
