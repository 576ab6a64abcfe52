"""``kvconf._scripts``: the hand-written RESP packing matches redis-py's."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.connection import Connection

from kvconf._scripts import pack_command


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "a" * 40, 2, "kvconf:{t}:ns:svc", "kvconf:{t}:hist:svc", b'"actor"', b""),
        ("SET", "clé", "värde ✓"),
        ("ZADD", "z", 0, "m", -7, 1.5, 1e300),
        ("SET", "big", b"x" * 200_000),
    ],
)
def test_pack_is_what_redis_py_sends(args: tuple[Any, ...]) -> None:
    assert pack_command(args) == b"".join(Connection().pack_command(*args))


@pytest.mark.parametrize("bad", [True, None, ["list"], 3j])
def test_pack_refuses_what_scripts_never_take(bad: object) -> None:
    with pytest.raises(TypeError, match="script argument"):
        pack_command(("SET", "k", bad))
