"""The embedded default: fakeredis in-process, persisted to the data dir.

(The snapshots issue fills in loading and persisting; until then the embedded
store starts empty.)
"""

from __future__ import annotations

from .config import Settings
from .store import Store


async def open_embedded_store(settings: Settings) -> Store:
    """A Store on the process's embedded server."""
    return Store(settings=settings)
