"""The snapshot file format alone: no Redis, no store."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from kvconf._snapshot import format as fmt
from kvconf.exceptions import SnapshotCorrupt, SnapshotNotFound, SnapshotVersionUnsupported


def _dump(tenant: str, n: int = 3) -> fmt.TenantDump:
    rec = [b'{"version":1,"revision":%d,"value":%d}' % (i, i) for i in range(n)]
    return fmt.TenantDump(
        tenant=tenant, revision=n, epoch="e1", meta={"created_at": "2026-01-01T00:00:00Z"},
        namespaces=["ns"], schemas={"ns": b"{}"},
        values={"ns": [x for i in range(n) for x in (b"k%d" % i, rec[i])]}, trash={},
        history={"ns": [b"k%d|%010d|%s" % (i, 1, rec[i]) for i in range(n)]},
        log=[x for i in range(n) for x in (i + 1, b'{"revision":%d}' % (i + 1))],
    )  # fmt: skip


def _write(path: Path, *dumps: fmt.TenantDump) -> fmt.Footer:
    with fmt.SnapshotWriter(path, label="t") as writer:
        for dump in dumps:
            writer.add(dump)
        return writer.finish()


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "a.kvsnap"
    dumps = [_dump("acme"), _dump("beta", 50)]
    footer = _write(path, *dumps)
    assert [t.tenant for t in footer.tenants] == ["acme", "beta"]
    with fmt.SnapshotReader(path) as reader:
        assert list(reader.dumps()) == dumps
        assert reader.footer == footer
    assert fmt.read_footer(path) == footer


def test_checksum_catches_a_flipped_byte(tmp_path: Path) -> None:
    path = tmp_path / "a.kvsnap"
    _write(path, _dump("acme"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        fmt.SnapshotReader(path)


def test_an_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.kvsnap"
    _write(path, _dump("acme"))
    data = bytearray(path.read_bytes())
    data[len(fmt.MAGIC) : len(fmt.MAGIC) + 4] = struct.pack(">I", 99)
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotVersionUnsupported) as refused:
        fmt.SnapshotReader(path)
    assert refused.value.details["version"] == 99


@pytest.mark.parametrize("keep", [0, 10, 20, 100, -40, -1])
def test_a_truncated_file_is_refused(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "a.kvsnap"
    _write(path, _dump("acme"))
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with pytest.raises(SnapshotCorrupt):
        fmt.SnapshotReader(path)


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound):
        fmt.SnapshotReader(tmp_path / "nope.kvsnap")


def test_format_1_history_is_upgraded() -> None:
    dump = _dump("acme", 1)
    dump.history = {"ns:k0": [b'{"version":4,"x":1}']}
    fmt.upgrade_history(dump)
    assert dump.history == {"ns": [b'k0|0000000004|{"version":4,"x":1}']}
