"""The embedded store's journal: tenant records appended after a base snapshot.

Each record is ``u32 length + sha256(payload) + payload`` where the payload
is a msgpack :class:`JournalRecord`: the full state of one tenant as captured
at one revision (or its absence), what kvconf writes changed in one tenant
since its previous record (a :class:`TenantDelta`: the cost of a flush follows
the writes, not the tenant's size), or one global key. Replaying a journal in
order over its base snapshot rebuilds the store; a torn tail (a crash while
appending) ends the replay at the last whole record, and a damaged record
followed by whole ones is reported (:func:`scan_journal`), never skipped
silently.

A record's dump has the layout of snapshot format 2 (history per namespace);
records written by a kvconf with per-key history are converted when read
(:func:`kvconf._snapshot.format.upgrade_history`).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import msgspec

from .format import TenantDump, fsync_dir, upgrade_history

_HEAD = struct.Struct(">I32s")


class GlobalKey(msgspec.Struct, array_like=True):
    """One key outside every tenant (API tokens): Redis type and flat contents."""

    key: str
    kind: str
    data: list[bytes]


class KeyDelta(msgspec.Struct, array_like=True):
    """One key as it is now: its stored record (None: deleted) and its history members."""

    namespace: str
    key: str
    record: bytes | None
    history: list[bytes]


class TenantDelta(msgspec.Struct, array_like=True):
    """What kvconf's write script changed in a tenant since the tenant's previous record.

    The small parts whole (revision, epoch, meta, namespace set), the changed
    keys one by one, and the change events after the previous record's
    revision; ``log_from`` is the lowest revision the log still holds (0:
    empty), so replay trims it as the write script did.
    """

    tenant: str
    revision: int
    epoch: str
    meta: dict[str, str]
    namespaces: list[str]
    keys: list[KeyDelta]
    log: list[int | bytes]
    log_from: int


class JournalRecord(msgspec.Struct, array_like=True):
    """A tenant's whole state (``dump`` None: the tenant is gone), a global key, or a delta."""

    tenant: str
    dump: TenantDump | None = None
    key: GlobalKey | None = None
    delta: TenantDelta | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(JournalRecord)


def journal_path(data_dir: Path, generation: int) -> Path:
    """The journal that follows base snapshot ``generation``."""
    return data_dir / f"journal-{generation:08d}.log"


def journal_generations(data_dir: Path) -> list[int]:
    """Generations of the journals present, ascending."""
    out = []
    for path in data_dir.glob("journal-*.log"):
        try:
            out.append(int(path.stem.removeprefix("journal-")))
        except ValueError:
            continue
    return sorted(out)


class JournalScan(msgspec.Struct):
    """What :func:`scan_journal` found: the intact records and any damage after them."""

    records: list[JournalRecord]
    #: Bytes the intact records span; the writer continues from here.
    valid: int
    #: Byte offset of a damaged record followed by whole ones (None: intact or torn tail).
    damaged_at: int | None = None
    #: The whole records after the damage: starting from the intact part loses them.
    lost: list[JournalRecord] = msgspec.field(default_factory=list)


def _record_at(data: bytes, at: int) -> tuple[JournalRecord, int] | None:
    """The whole record starting at byte ``at`` and its end, or None."""
    if at + _HEAD.size > len(data):
        return None
    n, digest = _HEAD.unpack_from(data, at)
    end = at + _HEAD.size + n
    if end > len(data):
        return None
    payload = data[at + _HEAD.size : end]
    if hashlib.sha256(payload).digest() != digest:
        return None
    try:
        return _decoder.decode(payload), end
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _records_from(data: bytes, at: int) -> tuple[list[JournalRecord], int]:
    records: list[JournalRecord] = []
    while (found := _record_at(data, at)) is not None:
        record, at = found
        if record.dump is not None:
            upgrade_history(record.dump)
        records.append(record)
    return records, at


def scan_journal(path: Path) -> JournalScan:
    """Read a journal, telling a torn tail from damage.

    A crash while appending leaves a tail that is not a whole record, with
    nothing whole after it: only writes never acknowledged as durable, so it
    is dropped. A record that fails its checksum with a whole record after
    it (found at the next record's offset, or at any later byte when the
    length itself is damaged) is damage: ``damaged_at`` and ``lost`` say
    where and what replaying the intact part would drop.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return JournalScan(records=[], valid=0)
    records, valid = _records_from(data, 0)
    if valid == len(data):
        return JournalScan(records=records, valid=valid)
    for later in range(valid + 1, len(data) - _HEAD.size + 1):
        if _record_at(data, later) is not None:
            lost, _ = _records_from(data, later)
            return JournalScan(records=records, valid=valid, damaged_at=valid, lost=lost)
    return JournalScan(records=records, valid=valid)


def read_journal(path: Path) -> tuple[list[JournalRecord], int]:
    """Whole records of a journal up to its first bad one, and the bytes they span."""
    scan = scan_journal(path)
    return scan.records, scan.valid


class JournalWriter:
    """Appends records and makes them durable with one fsync per batch."""

    def __init__(self, path: Path, *, valid_length: int | None = None) -> None:
        self.path = path
        fresh = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        if valid_length is not None:
            os.ftruncate(fd, valid_length)
        self.size = os.lseek(fd, 0, os.SEEK_END)
        self._fd = fd
        if fresh:
            os.fsync(fd)
            fsync_dir(path.parent)

    def append(self, records: list[JournalRecord]) -> None:
        """Write ``records`` and fsync them (all or, after a crash, a prefix)."""
        parts = []
        for record in records:
            payload = _encoder.encode(record)
            parts.append(_HEAD.pack(len(payload), hashlib.sha256(payload).digest()))
            parts.append(payload)
        data = b"".join(parts)
        if self._fd < 0:
            raise OSError(f"journal {self.path} is closed after a failed append")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except BaseException:
            self._undo()
            raise
        self.size += len(data)

    def _undo(self) -> None:
        """Cut a failed append off (ENOSPC, EIO): the next one must follow whole records.

        Left in place, the partial bytes would sit before later records and
        read as damage that hides acknowledged writes. If even the cut fails,
        the writer closes: the store then compacts into a new journal.
        """
        try:
            os.ftruncate(self._fd, self.size)
            os.lseek(self._fd, self.size, os.SEEK_SET)
        except OSError:
            self.close()

    @property
    def closed(self) -> bool:
        """True once closed (or after an append that could not be cut off)."""
        return self._fd < 0

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
