"""kvconf's own settings: one small object, read from the environment at the edge.

Every setting is an environment variable ``KVCONF_<NAME>`` and a CLI flag.
None of them starts with ``KVCONF_DEFAULT_``, the default prefix of the
environment layer of effective reads, and :meth:`Settings.validate` refuses a
layer prefix that would shadow one of them.
"""

from __future__ import annotations

import ipaddress
import os
import re
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
        if isinstance(values.get("snapshot_every"), str):
            values["snapshot_every"] = parse_duration(str(values["snapshot_every"]))
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
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|s|m|h|d)")
_PLAIN = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds from ``"600"``, ``"30s"``, ``"10m"``, ``"1h30m"``, ``"1d"`` or ``"250ms"``.

    A bare number is seconds; units may be combined largest first, as Go's
    ``time.ParseDuration`` does (``"1h30m"``, ``"2m30s"``). Negative numbers,
    ``nan`` and ``inf`` are refused (:class:`InvalidInput`).
    """
    raw = text.strip().lower()
    if _PLAIN.fullmatch(raw):
        return float(raw)
    seconds, pos, last = 0.0, 0, len(_UNITS)
    order = list(_UNITS)  # ms s m h d: a later part must use a smaller unit
    for match in _PART.finditer(raw):
        rank = order.index(match.group(2))
        if match.start() != pos or (rank >= last and last != len(_UNITS)):
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos, last = match.end(), rank
    else:
        if pos == len(raw) and pos > 0:
            return seconds
    raise InvalidInput(f"invalid duration {text!r} (try 30s, 10m, 1h30m)")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
