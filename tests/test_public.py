"""The public surface is pinned."""

from __future__ import annotations

import kvconf


def test_all_is_sorted_and_complete() -> None:
    names = [n for n in kvconf.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in kvconf.__all__:
        assert hasattr(kvconf, name), name
        if name != "__version__":
            assert getattr(kvconf, name).__doc__, f"{name} has no docstring"


def test_every_error_is_a_kvconf_error_with_a_code() -> None:
    errors = [getattr(kvconf, n) for n in kvconf.__all__ if n.endswith(("Error", "Exists"))]
    for cls in errors:
        assert issubclass(cls, kvconf.KvconfError)
    codes = {
        getattr(kvconf, n).code
        for n in kvconf.__all__
        if isinstance(getattr(kvconf, n), type)
        and issubclass(getattr(kvconf, n), kvconf.KvconfError)
    }
    assert len(codes) >= 20
