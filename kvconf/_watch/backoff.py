"""Reconnect backoff: grows over consecutive failures, forgotten after a healthy spell.

A connection that was up (subscribed) for ``healthy_after`` seconds or more
before it failed was not part of a run of failures: the next try waits the
base delay again. Without that, a watcher whose server dropped its pub/sub
connection a dozen times over a day (each time reconnecting at once) would
wait the cap (seconds) on the thirteenth, missing changes meanwhile.

>>> backoff = Backoff()
>>> backoff.down() <= BACKOFF_BASE    # first failure: a short wait
True
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "HEALTHY_AFTER", "Backoff", "backoff_delay"]

BACKOFF_BASE = 0.05
BACKOFF_CAP = 5.0
#: A connection up this long (seconds) before it failed resets the backoff.
HEALTHY_AFTER = 1.0


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Capped exponential backoff with jitter: in [d/2, d] for d = min(cap, base * 2**n)."""
    delay = min(cap, base * 2.0 ** min(attempt, 30))
    return float(delay * random.uniform(0.5, 1.0))


class Backoff:
    """The delay before each retry of one connection (or task), pure but for the clock.

    Call :meth:`up` when the connection works (first subscribe confirmation),
    :meth:`down` when it failed (returns how long to wait), :meth:`reset`
    after a success that proves health by itself.
    """

    def __init__(
        self,
        *,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
        healthy_after: float = HEALTHY_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base, self.cap, self.healthy_after = base, cap, healthy_after
        self.attempt = 0  # consecutive failures so far
        self._clock = clock
        self._up_since: float | None = None

    def up(self) -> None:
        """The connection works from now on (a second call keeps the first time)."""
        if self._up_since is None:
            self._up_since = self._clock()

    def down(self) -> float:
        """It failed: the seconds to wait before the next try."""
        up_since, self._up_since = self._up_since, None
        if up_since is not None and self._clock() - up_since >= self.healthy_after:
            self.attempt = 0  # it had been healthy: this failure starts a new run
        delay = backoff_delay(self.attempt, self.base, self.cap)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        """A success: the next failure waits the base delay."""
        self.attempt = 0
        self._up_since = None
