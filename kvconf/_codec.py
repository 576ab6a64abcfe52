"""Encoding and decoding, pure: the storage layout in one place.

The write script composes stored records by concatenating JSON fragments the
client encoded, so the layouts below are fixed: every record ends with its
value (``..., "value": <json>}``), which lets the script find a record's value
with a plain substring search (a ``,"value":`` with an unescaped quote can only
occur structurally, never inside an encoded string).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from .exceptions import InvalidValue, Unavailable, ValueTooLarge
from .models import ChangeEvent, Entry, Schema, Version

_encoder = msgspec.json.Encoder()
encode = _encoder.encode
_entry_decoder = msgspec.json.Decoder(Entry)
_version_decoder = msgspec.json.Decoder(Version)
_event_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")
_event_decoder = msgspec.json.Decoder(ChangeEvent)
_schema_decoder = msgspec.json.Decoder(Schema)

_SCALARS = (str, bool, int, type(None))

#: The deepest nesting of arrays and objects a value may have (documented in
#: the README). msgspec and the stdlib recurse per level, so a 20 KB body of
#: brackets would otherwise end in a RecursionError (a 500, a traceback).
MAX_DEPTH = 64


def as_text(raw: bytes | str) -> str:
    """A Redis reply item (bytes, or str from a decoding client) as text."""
    return raw.decode() if isinstance(raw, bytes) else raw


def now_iso() -> str:
    """The current UTC time as ISO-8601 with milliseconds and a ``Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_json(value: Any, key: str, depth: int = 0) -> None:
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is float:
        if not math.isfinite(value):
            raise InvalidValue(key, "NaN and infinity are not JSON")
        return
    if (kind is list or kind is dict) and depth >= MAX_DEPTH:
        # depth counts the arrays and objects around this one
        raise InvalidValue(key, f"nested deeper than {MAX_DEPTH} levels")
    if kind is list:
        for item in value:
            _check_json(item, key, depth + 1)
        return
    if kind is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise InvalidValue(key, "object keys must be strings")
            _check_json(item, key, depth + 1)
        return
    raise InvalidValue(key, f"{kind.__name__} is not a JSON value")


def encode_value(key: str, value: Any, limit: int) -> bytes:
    """Encode one value as JSON, refusing non-JSON values and oversize ones."""
    if type(value) not in _SCALARS:
        _check_json(value, key)
    data = _encoder.encode(value)
    if len(data) > limit:
        raise ValueTooLarge(key, len(data), limit)
    return data


def same_value(a: Any, b: Any) -> bool:
    """True if two JSON values are the same value, types included at every depth.

    ``1``, ``1.0`` and ``true`` differ, as do ``[1]`` and ``[true]``; object
    key order does not matter. The one definition of "unchanged" for dry
    runs, imports, rollbacks and comparisons.
    """
    if a is b:
        return True
    return _sorted_encoder.encode(a) == _sorted_encoder.encode(b)


def check_json(key: str, value: Any) -> None:
    """Refuse a value that is not JSON or nests deeper than :data:`MAX_DEPTH`."""
    if type(value) not in _SCALARS:
        _check_json(value, key)


def too_deep(data: bytes | str, limit: int = MAX_DEPTH) -> str | None:
    """The field under which JSON text nests deeper than ``limit``, else None.

    The field is the leading object keys of the path (``"values.k"`` for a
    change set, ``"body"`` for a bare array), at most three. A plain scan, no
    recursion: it runs only on text a decoder refused for its depth.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    path: list[str | int] = []
    # One frame per open container: its kind, the current key or item index.
    frames: list[list[Any]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if frames and frames[-1][0] == "{" and frames[-1][1] is None:
                try:
                    frames[-1][1] = str(msgspec.json.decode(text[i : j + 1]))
                except msgspec.DecodeError:
                    frames[-1][1] = "?"
            i = j + 1
            continue
        if ch in "[{":
            if frames:
                path.append(frames[-1][1] if frames[-1][1] is not None else 0)
            if len(frames) >= limit:
                return _path_text(path)
            frames.append([ch, 0 if ch == "[" else None])
        elif ch in "]}":
            if frames:
                frames.pop()
                if path:
                    path.pop()
        elif ch == "," and frames:
            frame = frames[-1]
            frame[1] = frame[1] + 1 if frame[0] == "[" else None
        i += 1
    return None


def _path_text(path: list[str | int]) -> str:
    names: list[str] = []
    for part in path[:3]:
        if not isinstance(part, str):
            break
        names.append(part)
    return ".".join(names) or "body"


def _corrupt(what: str, exc: Exception) -> Unavailable:
    return Unavailable(f"corrupt {what} in Redis: {exc}", reason="corrupt_state")


def decode_entry(data: bytes) -> Entry:
    """Decode a namespace hash field (raises Unavailable on foreign data)."""
    try:
        return _entry_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _corrupt("entry", exc) from exc


def decode_version(data: bytes) -> Version:
    """Decode a per-key history record."""
    try:
        return _version_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _corrupt("history record", exc) from exc


def decode_event(data: bytes | str) -> ChangeEvent:
    """Decode a change event from the log or the channel."""
    try:
        return _event_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _corrupt("change event", exc) from exc


def reset_event(tenant: str, epoch: str, revision: int, actor: str, reason: str) -> bytes:
    """The JSON of a ``reset`` event (a tenant's state replaced): the one event Python writes.

    The write and schema scripts compose their events in Lua with the same
    fields; ``tests/test_events.py`` pins every producer to :class:`ChangeEvent`.
    """
    event = ChangeEvent(
        tenant=tenant,
        epoch=epoch,
        revision=revision,
        namespace="",
        actor=actor,
        reason=reason,
        ts=datetime.now(UTC),
        type="reset",
    )
    return _event_encoder.encode(event)


def decode_schema(data: bytes | str) -> Schema:
    """Decode a stored schema document."""
    try:
        return _schema_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise _corrupt("schema", exc) from exc


def to_builtins(obj: Any) -> Any:
    """Structs and datetimes to plain JSON-ready Python values."""
    return msgspec.to_builtins(obj)
