"""Background services of ``kvconf serve``: embedded persistence, scheduled snapshots.

(The snapshots issue fills this in; the API's lifespan enters it once.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .config import Settings
from .store import Store


@asynccontextmanager
async def background_services(store: Store, settings: Settings) -> AsyncIterator[None]:
    """Run the server's background services for as long as the context is open."""
    yield
