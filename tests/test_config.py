"""Settings from the environment, pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvconf import InvalidInput, Settings
from kvconf.config import parse_duration


def test_settings_from_environment_and_overrides() -> None:
    settings = Settings.from_env(
        {"KVCONF_PORT": "9000", "KVCONF_DATA_DIR": "/tmp/kv", "KVCONF_SNAPSHOT_EVERY": "10m"},
        port=9100,
        redis_url=None,
    )
    assert (settings.port, settings.data_dir, settings.snapshot_every) == (
        9100,
        Path("/tmp/kv"),
        600.0,
    )
    assert settings.redis_url is None


def test_boolean_settings_from_text() -> None:
    assert Settings.from_env({"KVCONF_API_READ_CACHE": "0"}).api_read_cache is False
    assert Settings.from_env({"KVCONF_FSYNC_WRITES": "true"}).fsync_writes is True
    assert Settings.from_env({}).api_read_cache is True


def test_flags_may_pass_paths_and_numbers_as_objects() -> None:
    settings = Settings.from_env({}, data_dir=Path("/tmp/kv2"), port=8000, fsync_writes=True)
    assert (settings.data_dir, settings.port, settings.fsync_writes) == (
        Path("/tmp/kv2"),
        8000,
        True,
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"KVCONF_PORT": "eighty"},
        {"KVCONF_HISTORY_LIMIT": "0"},
        {"KVCONF_DEFAULTS_ENV_PREFIX": "KVCONF_"},
        {"KVCONF_DEFAULTS_ENV_PREFIX": "KVCONF_REDIS"},
        {"KVCONF_DEFAULTS_ENV_PREFIX": "bad prefix"},
        {"KVCONF_SNAPSHOT_EVERY": "soon"},
    ],
)
def test_bad_settings_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        Settings.from_env(environ)


def test_default_layer_prefix_never_reads_kvconf_settings() -> None:
    settings = Settings.from_env({})
    settings.validate()
    assert settings.defaults_env_prefix == "KVCONF_DEFAULT_"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("250ms", 0.25), ("1d", 86400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400.0),
        ("2h 5m", 7500.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("2m30s", 150.0),
        ("1d12h", 129600.0),
        (" 1.5h ", 5400.0),
    ],
)
def test_parse_duration_compound(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-inf", "1e400", "-1s", "-5", "", "1x", "1h-3m", "1e3"]
)
def test_parse_duration_refuses_non_finite_and_negative(text: str) -> None:
    with pytest.raises(InvalidInput, match="duration"):
        parse_duration(text)


def test_parse_duration_error_does_not_echo_huge_input() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_duration("9" * 1000)
    assert len(info.value.message) < 120


def test_write_timeout_and_forwarded_ips_from_the_environment() -> None:
    assert 0 < Settings().write_timeout < 1.0
    cfg = Settings.from_env(
        {"KVCONF_WRITE_TIMEOUT": "250ms", "KVCONF_FORWARDED_ALLOW_IPS": "10.0.0.1"}
    )
    assert cfg.write_timeout == 0.25
    assert cfg.forwarded_allow_ips == "10.0.0.1"
    assert Settings().forwarded_allow_ips == ""
    with pytest.raises(InvalidInput):
        Settings.from_env({"KVCONF_WRITE_TIMEOUT": "-1"})


def test_safe_url_hides_only_the_password() -> None:
    from kvconf.config import safe_url

    assert safe_url("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert safe_url("https://u:p@[::1]:8767/x") == "https://u:***@[::1]:8767/x"
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
