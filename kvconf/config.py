"""kvconf's own settings: one small object, read from the environment at the edge.

Every setting is an environment variable ``KVCONF_<NAME>`` and a CLI flag.
None of them starts with ``KVCONF_DEFAULT_``, the default prefix of the
environment layer of effective reads, and :meth:`Settings.validate` refuses a
layer prefix that would shadow one of them.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .exceptions import InvalidInput

__all__ = ["Settings", "parse_duration"]

_ENV_PREFIX = "KVCONF_"
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


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
    #: REST API: most watch (SSE) streams one worker serves; more are refused
    #: with 503 and ``Retry-After`` rather than left open and silent.
    max_streams: int = 10_000

    #: Periodic readable export of every tenant by ``kvconf serve`` (0: off),
    #: into ``export_dir`` (unset: ``<data_dir>/exports``) as ``export_format``,
    #: keeping ``export_keep`` timestamped copies; sensitive values masked
    #: unless ``export_secrets``.
    export_every: float = 0.0
    export_dir: Path | None = None
    export_format: Literal["yaml", "json"] = "json"
    export_keep: int = 24
    export_secrets: bool = False
    #: Logs of ``kvconf serve``: ``text`` or ``json`` lines, and the level.
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

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
        for name in ("snapshot_every", "export_every", "write_timeout"):
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
        for name in (
            "max_value_bytes", "max_keys_per_write", "history_limit", "log_limit", "export_keep",
            "max_streams",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise InvalidInput(f"setting {name} must be at least 1")
        for name in ("snapshot_every", "export_every", "write_timeout"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise InvalidInput(f"setting {name} must be a finite, non-negative duration")
        if self.log_level.upper() not in _LOG_LEVELS:
            raise InvalidInput(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
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
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"30s"``, ``"10m"``, ``"1h30m"``, ``"1d"`` or ``"250ms"``.

    A bare number is seconds; unit parts add up (``1h30m`` is 5400). NaN,
    infinities, negative and empty durations are refused with
    :class:`InvalidInput`.
    """
    raw = text.strip().lower().replace(" ", "")
    shown = text if len(text) <= 40 else text[:40] + "..."
    hint = "(try 30s, 10m, 1h30m)"
    if not raw:
        raise InvalidInput(f"invalid duration {shown!r}: empty {hint}")
    if raw.startswith("-"):
        raise InvalidInput(f"duration {shown!r} must not be negative")
    if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", raw):
        seconds = float(raw)
    elif re.fullmatch(f"(?:{_PART.pattern})+", raw):
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(raw))
    else:
        # float() would take "nan", "inf" and "1e400": say why they are refused.
        raise InvalidInput(f"invalid duration {shown!r} {hint}")
    if not math.isfinite(seconds):
        raise InvalidInput(f"duration {shown!r} is not finite")
    return seconds


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: for logs and messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    netloc = f"{parts.username or ''}:***@{host or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
