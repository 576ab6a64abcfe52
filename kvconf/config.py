"""kvconf's own settings: one small object, read from the environment at the edge.

Every setting is an environment variable ``KVCONF_<NAME>`` and a CLI flag.
None of them starts with ``KVCONF_DEFAULT_``, the default prefix of the
environment layer of effective reads, and :meth:`Settings.validate` refuses a
layer prefix that would shadow one of them.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path, PurePath

import msgspec

from .exceptions import InvalidInput

__all__ = ["Settings", "parse_duration"]

_ENV_PREFIX = "KVCONF_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Settings of a kvconf store and server.

    ``redis_url`` unset means the embedded default (fakeredis in-process,
    persisted under ``data_dir`` by the server).
    """

    redis_url: str | None = None
    data_dir: Path = Path("~/.kvconf").expanduser()
    host: str = "127.0.0.1"
    port: int = 8767
    #: Largest encoded value, in bytes.
    max_value_bytes: int = 1024 * 1024
    #: Most keys in one change set.
    max_keys_per_write: int = 1000
    #: Versions kept per key (the newest).
    history_limit: int = 100
    #: Revisions kept in the tenant change log (the newest).
    log_limit: int = 10_000
    #: Prefix of the environment layer of effective reads.
    defaults_env_prefix: str = "KVCONF_DEFAULT_"
    #: Actor recorded for writes that name none.
    actor: str = "anonymous"
    #: Admin bearer token for the REST API (unset: no admin token).
    admin_token: str | None = None
    #: Snapshot schedule for ``kvconf serve`` in seconds (0: off) and retention.
    snapshot_every: float = 0.0
    snapshot_keep: int = 24
    #: Embedded mode: persist before acknowledging a write (else within ~1 s).
    fsync_writes: bool = False
    #: REST API: serve reads from in-process watchers when they are in step.
    api_read_cache: bool = True
    #: REST API: proxies whose ``X-Forwarded-For``/``-Proto`` are believed
    #: (comma-separated addresses or networks, ``*`` for any; empty: none), as
    #: uvicorn's ``forwarded_allow_ips``. The audit trail's client address
    #: comes from them only.
    forwarded_allow_ips: str = ""
    #: Seconds a write waits for Redis before it is refused with Unavailable,
    #: plus 1 s per 50 MB of values (0: no limit beyond the socket timeout). A frozen server then
    #: costs a REST write well under a second, not redis-py's 5 s; the write
    #: may still be applied if Redis resumes and runs it.
    write_timeout: float = 0.8

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from ``KVCONF_*`` environment variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in msgspec.structs.fields(cls):
            raw = env.get(_ENV_PREFIX + field.name.upper())
            if raw is not None and raw != "":
                values[field.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("snapshot_every", "write_timeout"):
            if isinstance(values.get(name), str):
                values[name] = parse_duration(str(values[name]))
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"invalid kvconf setting: {exc}") from exc
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse contradictory settings (raises :class:`InvalidInput`)."""
        for name in ("max_value_bytes", "max_keys_per_write", "history_limit", "log_limit"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"setting {name} must be at least 1")
        if not self.write_timeout >= 0:
            raise InvalidInput("setting write_timeout must not be negative")
        prefix = self.defaults_env_prefix
        if not prefix or not prefix.replace("_", "").isalnum():
            raise InvalidInput("defaults_env_prefix must be letters, digits and underscores")
        for field in msgspec.structs.fields(self):
            own = _ENV_PREFIX + field.name.upper()
            if own.startswith(prefix) or own == prefix.rstrip("_"):
                raise InvalidInput(
                    f"defaults_env_prefix {prefix!r} would read kvconf's own setting {own}"
                )


def _dec_hook(tp: type, obj: object) -> object:
    if tp is Path and isinstance(obj, str | PurePath):
        return Path(obj).expanduser()
    raise NotImplementedError(f"cannot convert {type(obj).__name__} to {tp.__name__}")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"30s"``, ``"10m"``, ``"1h"``, ``"1d"`` or ``"250ms"``."""
    raw = text.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        if raw.endswith(unit):
            number, factor = raw[: -len(unit)], _UNITS[unit]
            break
    else:
        number, factor = raw, 1.0
    try:
        seconds = float(number) * factor
    except ValueError:
        raise InvalidInput(f"invalid duration {text!r} (try 30s, 10m, 1h)") from None
    if seconds < 0:
        raise InvalidInput(f"duration {text!r} must not be negative")
    return seconds


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
