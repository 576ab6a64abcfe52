"""The snapshot file format, pure: writing safely and reading with checks.

Layout (all integers big-endian)::

    magic    16 bytes  b"KVCONF-SNAPSHOT\\n"
    format    4 bytes  format version (2; 1 is still read, see below)
    body      n bytes  zstd stream of records: u32 length + msgpack TenantDump
    footer    m bytes  JSON: created_at, body_size, per-tenant summary, extras
    m         4 bytes  footer length
    sha256   32 bytes  over every byte before it

A file is written to a temporary name in the target directory (mode 0600),
flushed and fsynced, renamed into place and the directory fsynced, so a
crash leaves either the previous file or the new complete one. Readers check
magic, format version and checksum before decoding anything, and then check
that the decoded body matches the footer's summary.

Format 2 stores a tenant's history per namespace: the members of its history
zset (``<key>|<version, 10 digits>|<record JSON>``, all scored 0), in order.
Format 1 stored it per key (``"ns:key"`` to its records, oldest first);
version-1 files are still read, their history converted on the fly
(:func:`upgrade_history`), and only version-2 files are written.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import struct
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import zstandard

from ..exceptions import SnapshotCorrupt, SnapshotNotFound, SnapshotVersionUnsupported

MAGIC = b"KVCONF-SNAPSHOT\n"
FORMAT_VERSION = 2
#: Format versions this kvconf reads (version 1: per-key history, converted).
READABLE_VERSIONS = (1, 2)
SUFFIX = ".kvsnap"
_PREFIX_LEN = len(MAGIC) + 4
_TRAILER_LEN = 4 + 32
_CHUNK = 1 << 20
_MAX_RECORD = 1 << 31
_MAX_FOOTER = 64 << 20


class TenantDump(msgspec.Struct, array_like=True):
    """One tenant as captured at one revision: raw stored records, untouched.

    ``values`` and ``trash`` map a namespace to its flat hash (field, record,
    ...); ``history`` maps a namespace to the members of its history zset in
    order (``<key>|<version, 10 digits>|<record JSON>``; every score is 0);
    ``log`` is flat (revision, event, ...).
    """

    tenant: str
    revision: int
    epoch: str
    meta: dict[str, str]
    namespaces: list[str]
    schemas: dict[str, bytes]
    values: dict[str, list[bytes]]
    trash: dict[str, list[bytes]]
    history: dict[str, list[bytes]]
    log: list[int | bytes]

    @property
    def keys(self) -> int:
        """Number of current keys."""
        return sum(len(f) // 2 for f in self.values.values())

    @property
    def versions(self) -> int:
        """Number of history records kept."""
        return sum(len(h) for h in self.history.values())


class TenantSummary(msgspec.Struct, frozen=True):
    """What a snapshot holds of one tenant."""

    tenant: str
    revision: int
    epoch: str
    namespaces: int
    keys: int
    versions: int
    log: int
    deleted: bool = False


_V1_VERSION = re.compile(rb'^\{"version":(\d+),')


def upgrade_history(dump: TenantDump) -> TenantDump:
    """Convert a format-1 dump's per-key history to per-namespace members, in place.

    Format 1 named history by ``"ns:key"``; namespaces never hold ``:``, so a
    name with one is format 1. Records become ``<key>|<version>|<record>``
    (the version is the record's first field), sorted as the zset holds them.
    Returns ``dump``; a format-2 dump is left as it is.
    """
    if not any(":" in name for name in dump.history):
        return dump
    merged: dict[str, list[bytes]] = {}
    for name, records in dump.history.items():
        ns, sep, key = name.partition(":")
        if not sep:  # already per namespace
            merged.setdefault(ns, []).extend(records)
            continue
        out = merged.setdefault(ns, [])
        head = key.encode() + b"|"
        for record in records:
            found = _V1_VERSION.match(record)
            version = int(found.group(1)) if found else 0
            out.append(b"%s%010d|%s" % (head, version, record))
    for members in merged.values():
        members.sort()
    dump.history = merged
    return dump


def summarize(dump: TenantDump) -> TenantSummary:
    """The summary of one captured tenant."""
    return TenantSummary(
        tenant=dump.tenant,
        revision=dump.revision,
        epoch=dump.epoch,
        namespaces=len(dump.values),
        keys=dump.keys,
        versions=dump.versions,
        log=len(dump.log) // 2,
        deleted="deleted_at" in dump.meta,
    )


class Footer(msgspec.Struct, frozen=True):
    """The file's own description, covered by the checksum."""

    format: int
    created_at: datetime
    body_size: int
    compression: str
    tenants: list[TenantSummary]
    label: str = ""
    generation: int = 0


_encoder = msgspec.msgpack.Encoder()
_dump_decoder = msgspec.msgpack.Decoder(TenantDump)
_footer_decoder = msgspec.json.Decoder(Footer)


class RecordBatch:
    """Body records (``u32 length + msgpack TenantDump``) waiting to be compressed."""

    def __init__(self) -> None:
        self.records: list[bytearray] = []
        self.size = 0
        self.summaries: list[TenantSummary] = []

    def add(self, dump: TenantDump) -> TenantSummary:
        """Frame one tenant; returns its summary."""
        record = bytearray(4)
        _encoder.encode_into(dump, record, 4)
        struct.pack_into(">I", record, 0, len(record) - 4)
        self.records.append(record)
        self.size += len(record)
        self.summaries.append(summarize(dump))
        return self.summaries[-1]


def snapshot_name(label: str = "", now: datetime | None = None) -> str:
    """A sortable, unique file name: ``kvconf-<UTC time>[-label].kvsnap``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"kvconf-{stamp}{'-' + label if label else ''}{SUFFIX}"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Sink:
    """Counts and hashes what goes to the file."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.fh.write(data)
            self.sha.update(data)
            self.size += len(data)


_TMP_MARK = ".tmp-"
#: A temporary file of an unknown writer (no PID in its name) is stale after this long.
STALE_UNKNOWN = 3600.0
#: A temporary file of a live PID is taken as stale after this long (the PID was reused).
STALE_LIVE = 86400.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale_temporaries(directory: Path, *, now: float | None = None) -> list[Path]:
    """Remove temporary files of saves whose writer is gone; return the removed.

    A temporary is named ``.<file>.tmp-<pid>-<random>``: it is stale when its
    writer's PID is dead, or when it has not been written to for
    :data:`STALE_LIVE` seconds (the PID was reused). A name without a PID
    (an older kvconf) is stale after :data:`STALE_UNKNOWN` seconds. The
    temporary of a live concurrent writer is never removed.
    """
    removed: list[Path] = []
    moment = time.time() if now is None else now
    for tmp in directory.glob(f".*{SUFFIX}{_TMP_MARK}*"):
        pid_text, sep, _ = tmp.name.rpartition(_TMP_MARK)[2].partition("-")
        try:
            age = moment - tmp.stat().st_mtime
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        if sep and pid_text.isdigit():
            stale = not _pid_alive(int(pid_text)) or age > STALE_LIVE
        else:
            stale = age > STALE_UNKNOWN
        if stale:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class SnapshotWriter:
    """Writes one snapshot file safely; use as a context manager.

    >>> with SnapshotWriter(path) as w:          # doctest: +SKIP
    ...     w.add(dump)
    ...     footer = w.finish()
    The file appears at ``path`` only when ``finish`` completed; on any error
    the temporary file is removed and ``path`` is left as it was.
    """

    def __init__(self, path: Path, *, label: str = "", generation: int = 0, level: int = 3):
        self.path = path
        self.label = label
        self.generation = generation
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        remove_stale_temporaries(path.parent)
        self._tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fh = os.fdopen(fd, "wb", buffering=_CHUNK)
        self._sink = _Sink(self._fh)
        self._sink.write(MAGIC + struct.pack(">I", FORMAT_VERSION))
        self._zstd = zstandard.ZstdCompressor(level=level).compressobj()
        self._tenants: list[TenantSummary] = []
        self._done = False

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._done:
            self.abort()

    def add(self, dump: TenantDump) -> TenantSummary:
        """Append one tenant."""
        batch = RecordBatch()
        summary = batch.add(dump)
        self.add_batch(batch)
        return summary

    def add_batch(self, batch: RecordBatch) -> None:
        """Append the tenants of ``batch``.

        Compression, hashing and writing release the GIL: run it in a thread
        while the event loop reads the next tenants. Batches of a few
        megabytes, so the thread takes the GIL back rarely.
        """
        for record in batch.records:
            self._sink.write(self._zstd.compress(record))
        self._tenants.extend(batch.summaries)

    def finish(self) -> Footer:
        """Complete the file: footer, checksum, fsync, rename, directory fsync."""
        self._sink.write(self._zstd.flush())
        footer = Footer(
            format=FORMAT_VERSION,
            created_at=datetime.now(UTC),
            body_size=self._sink.size - _PREFIX_LEN,
            compression="zstd",
            tenants=self._tenants,
            label=self.label,
            generation=self.generation,
        )
        raw = msgspec.json.encode(footer)
        self._sink.write(raw + struct.pack(">I", len(raw)))
        self._fh.write(self._sink.sha.digest())
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        self._done = True
        fsync_dir(self.path.parent)
        return footer

    def abort(self) -> None:
        """Drop the temporary file; the target path is untouched."""
        self._done = True
        self._fh.close()
        self._tmp.unlink(missing_ok=True)


class SnapshotReader:
    """Checked access to one snapshot file (an open file: renames don't affect it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = FORMAT_VERSION
        try:
            self._fh = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            raise SnapshotNotFound(f"no snapshot at {path}", path=str(path)) from None
        except IsADirectoryError:
            raise SnapshotNotFound(f"{path} is a directory", path=str(path)) from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            self.footer = self._check()
        except BaseException:
            self._fh.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> SnapshotReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _corrupt(self, why: str) -> SnapshotCorrupt:
        return SnapshotCorrupt(f"snapshot {self.path} is corrupt: {why}", path=str(self.path))

    def _check(self) -> Footer:
        fh = self._fh
        head = fh.read(_PREFIX_LEN)
        if len(head) < len(MAGIC) or head[: len(MAGIC)] != MAGIC:
            raise self._corrupt("not a kvconf snapshot (bad magic)")
        if len(head) < _PREFIX_LEN or self.size < _PREFIX_LEN + _TRAILER_LEN:
            raise self._corrupt("truncated")
        (version,) = struct.unpack(">I", head[len(MAGIC) :])
        if version not in READABLE_VERSIONS:
            raise SnapshotVersionUnsupported(
                f"snapshot {self.path} has format version {version}; this kvconf reads "
                f"versions {', '.join(map(str, READABLE_VERSIONS))}",
                path=str(self.path),
                version=version,
                supported=list(READABLE_VERSIONS),
            )
        self.version = version
        sha = hashlib.sha256(head)
        left = self.size - 32 - _PREFIX_LEN
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                raise self._corrupt("truncated")
            sha.update(chunk)
            left -= len(chunk)
        if fh.read(32) != sha.digest():
            raise self._corrupt("checksum mismatch (truncated or modified)")
        fh.seek(self.size - _TRAILER_LEN)
        (footer_len,) = struct.unpack(">I", fh.read(4))
        body_end = self.size - _TRAILER_LEN - footer_len
        if footer_len > _MAX_FOOTER or body_end < _PREFIX_LEN:
            raise self._corrupt("bad footer length")
        fh.seek(body_end)
        try:
            footer = _footer_decoder.decode(fh.read(footer_len))
        except msgspec.DecodeError as exc:
            raise self._corrupt(f"bad footer: {exc}") from None
        if footer.format != version or footer.body_size != body_end - _PREFIX_LEN:
            raise self._corrupt("footer does not match the file")
        if footer.compression != "zstd":
            raise self._corrupt(f"unknown compression {footer.compression!r}")
        return footer

    def _chunks(self) -> Iterator[bytes]:
        self._fh.seek(_PREFIX_LEN)
        left = self.footer.body_size
        while left > 0:
            chunk = self._fh.read(min(_CHUNK, left))
            left -= len(chunk)
            yield chunk

    def dumps(self) -> Iterator[TenantDump]:
        """Decode the tenants in file order (raises SnapshotCorrupt on bad data)."""
        inflate = zstandard.ZstdDecompressor().decompressobj()
        buf = bytearray()
        at = 0
        expected = iter(self.footer.tenants)
        try:
            for chunk in self._chunks():
                buf += inflate.decompress(chunk)
                while len(buf) - at >= 4:
                    (n,) = struct.unpack_from(">I", buf, at)
                    if n > _MAX_RECORD:
                        raise self._corrupt("bad record length")
                    if len(buf) - at - 4 < n:
                        break
                    dump = _dump_decoder.decode(memoryview(buf)[at + 4 : at + 4 + n])
                    at += 4 + n
                    if summarize(dump) != next(expected, None):
                        raise self._corrupt(f"tenant {dump.tenant!r} does not match the footer")
                    yield upgrade_history(dump) if self.version == 1 else dump
                if at > _CHUNK:
                    del buf[:at]
                    at = 0
        except (zstandard.ZstdError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise self._corrupt(str(exc)) from None
        if at != len(buf) or not inflate.eof or next(expected, None) is not None:
            raise self._corrupt("body ends early or has trailing data")


def read_footer(path: Path) -> Footer:
    """The footer of a file without checking the checksum (for listings)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < _PREFIX_LEN + _TRAILER_LEN:
            raise SnapshotCorrupt(f"snapshot {path} is truncated", path=str(path))
        fh.seek(size - _TRAILER_LEN)
        (footer_len,) = struct.unpack(">I", fh.read(4))
        if footer_len > min(_MAX_FOOTER, size):
            raise SnapshotCorrupt(f"snapshot {path} has a bad footer", path=str(path))
        fh.seek(size - _TRAILER_LEN - footer_len)
        try:
            return _footer_decoder.decode(fh.read(footer_len))
        except msgspec.DecodeError as exc:
            raise SnapshotCorrupt(f"snapshot {path} has a bad footer", path=str(path)) from exc


def iter_flat_pairs(flat: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
    """(a, b), (c, d) ... from a flat list a, b, c, d."""
    it = iter(flat)
    return zip(it, it, strict=True)
