"""The one Redis protocol (RESP) encoder kvconf uses when it writes commands itself.

The write runner, the pub/sub session and snapshots send pre-encoded
commands on connections they hold; each encodes here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["command", "pack_command"]


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: what redis-py's ``pack_command`` does, in a third of the time.

    Arguments are ``str`` (UTF-8), ``bytes``, ``int`` or ``float``, as the
    scripts take them; anything else is a TypeError.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is str:
            data = arg.encode()
        elif kind is bytes:
            data = arg
        elif kind is int or kind is float:
            data = repr(arg).encode()
        else:
            raise TypeError(f"a script argument must be str, bytes, int or float, not {kind}")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def command(*args: Any) -> bytes:
    """``pack_command`` of the arguments: ``command("GET", key)``."""
    return pack_command(args)
