"""Values as typed on the command line (the HTTPie convention).

``key=text`` is a string, unless the key's schema gives it a type: then the
schema decides (``port=8080`` is 8080 for an ``int`` key, ``"8080"`` for a
``str`` key). ``key:=json`` is a JSON value (``retries:=3``,
``hosts:='["a","b"]'``, ``debug:=true``). ``key=@path`` reads the text from a
file and ``key=@-`` from standard input; ``key:=@path`` reads JSON. No number
is ever guessed: ``version=1.10`` stays the string ``"1.10"``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .._codec import MAX_DEPTH, too_deep
from ..exceptions import InvalidInput, InvalidValue, SchemaProblem
from ..models import KeySpec
from ..schema import coerce_text

__all__ = ["parse_assignments"]


def _read(source: str, key: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except OSError as exc:
        raise InvalidInput(f"{key}: cannot read {source!r}: {exc.strerror}", key=key) from None


def _split(pair: str) -> tuple[str, bool, str]:
    key, sep, text = pair.partition("=")
    if not sep or not key.rstrip(":"):
        raise InvalidInput(f"expected KEY=VALUE or KEY:=JSON, got {pair.partition('=')[0]!r}")
    if key.endswith(":"):
        return key[:-1], True, text
    return key, False, text


def parse_assignments(
    pairs: Sequence[str], specs: Mapping[str, KeySpec]
) -> tuple[dict[str, Any], list[SchemaProblem]]:
    """Values from ``KEY=VALUE`` / ``KEY:=JSON`` arguments, and the problems found.

    Every unusable value is a problem (one per key, never holding the value),
    so the caller can report them all at once together with the schema's
    verdict on the usable ones. A malformed argument raises :class:`InvalidInput`.
    """
    values: dict[str, Any] = {}
    problems: list[SchemaProblem] = []
    for pair in pairs:
        key, is_json, raw = _split(pair)
        if key in values:
            raise InvalidInput(f"key {key!r} given twice", key=key)
        text = _read(raw[1:], key) if raw.startswith("@") else raw
        if is_json:
            if too_deep(text) is not None:  # before the decoder recurses into it
                raise InvalidValue(key, f"nested deeper than {MAX_DEPTH} levels")
            try:
                values[key] = msgspec.json.decode(text)
            except msgspec.DecodeError:
                problems.append(SchemaProblem(key, "json", "is not valid JSON (KEY:=JSON)"))
            continue
        spec = specs.get(key)
        if spec is None:
            values[key] = text
            continue
        try:
            values[key] = coerce_text(text, spec)
        except ValueError:
            problems.append(SchemaProblem(key, "type", f"is not a valid {spec.type}"))
    return values, problems
