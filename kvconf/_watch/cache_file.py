"""The watcher's optional local cache file: last known config for a cold start.

Written atomically (temporary file in the same directory, flushed and
fsynced, renamed into place, directory fsynced) with mode 0600, so a crash
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import msgspec

from ..models import Entry, Schema

__all__ = ["CacheFile", "load_cache_file", "write_cache_file"]

FORMAT = 1


class CacheFile(msgspec.Struct, frozen=True):
    """What the cache file holds: one tenant's followed state at one revision."""

    tenant: str
    epoch: str
    revision: int
    namespaces: dict[str, dict[str, Entry]]
    schemas: dict[str, Schema] = {}
    schema_gen: int = -1
    written_at: float = 0.0
    format: int = FORMAT


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CacheFile)


def write_cache_file(path: Path, data: CacheFile) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    body = _encoder.encode(msgspec.structs.replace(data, written_at=time.time()))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_cache_file(path: Path, tenant: str) -> CacheFile | None:
    """The cache file's content if it exists, is readable and is ``tenant``'s."""
    try:
        data = _decoder.decode(Path(path).read_bytes())
    except (OSError, msgspec.DecodeError):
        return None
    if data.format != FORMAT or data.tenant != tenant:
        return None
    return data
