"""Server-side scripts: loaded once from ``lua/*.lua``, called by SHA.

redis-py's ``register_script`` runs ``EVALSHA`` and falls back to loading the
script on ``NOSCRIPT`` (after a server restart or ``SCRIPT FLUSH``), so each
call is one round trip in the steady state.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

__all__ = ["Scripts", "script_source"]


@cache
def script_source(name: str) -> str:
    """The Lua source of the named script (``write``, ``read_state``, ...)."""
    return resources.files("kvconf").joinpath("lua", f"{name}.lua").read_text("utf-8")


class Scripts:
    """The scripts bound to one Redis client, registered lazily by name."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._bound: dict[str, Any] = {}

    async def __call__(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run script ``name`` with ``keys`` and ``args``; one round trip."""
        script = self._bound.get(name)
        if script is None:
            script = self._bound[name] = self._client.register_script(script_source(name))
        return await script(keys=keys, args=args)
