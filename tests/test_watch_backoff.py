"""Reconnect backoff: the pure policy, and the hub on a real server killing its pub/sub."""

from __future__ import annotations

import asyncio
import time

import pytest

from kvconf import Store
from kvconf._watch.backoff import BACKOFF_BASE, BACKOFF_CAP, Backoff, backoff_delay
from kvconf.watcher import Watcher

from .redis_server import RedisServer
from .test_watcher import until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delay_is_jittered_exponential_and_capped() -> None:
    for attempt in range(12):
        top = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
        for _ in range(20):
            assert top / 2 <= backoff_delay(attempt) <= top
    assert backoff_delay(10_000) <= BACKOFF_CAP  # no overflow


def test_consecutive_failures_grow_the_delay() -> None:
    backoff = Backoff(clock=Clock())
    delays = [backoff.down() for _ in range(8)]
    assert backoff.attempt == 8
    assert delays[0] <= BACKOFF_BASE
    assert delays[7] >= min(BACKOFF_CAP, BACKOFF_BASE * 2**7) / 2  # jitter: [d/2, d]


def test_a_connection_that_was_up_long_enough_resets_the_delay() -> None:
    clock = Clock()
    backoff = Backoff(healthy_after=1.0, clock=clock)
    for _ in range(6):
        backoff.down()
    for _ in range(12):  # a dozen drops, each after a healthy spell
        backoff.up()
        clock.now += 1.5
        assert backoff.down() <= BACKOFF_BASE
        assert backoff.attempt == 1


def test_a_connection_that_failed_quickly_keeps_growing() -> None:
    clock = Clock()
    backoff = Backoff(healthy_after=1.0, clock=clock)
    for expected in range(1, 6):
        backoff.up()  # subscribed, then dropped at once: a flapping server
        clock.now += 0.2
        backoff.down()
        assert backoff.attempt == expected


def test_up_keeps_the_first_time_and_reset_forgets() -> None:
    clock = Clock()
    backoff = Backoff(healthy_after=1.0, clock=clock)
    backoff.down()
    backoff.up()
    clock.now += 0.6
    backoff.up()  # a later confirmation (another channel) does not restart the timer
    clock.now += 0.6
    backoff.down()
    assert backoff.attempt == 1
    backoff.down()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.down() <= BACKOFF_BASE


async def _kill_and_catch_up(
    redis_server: RedisServer, tenant: str, kills: int, healthy: float
) -> list[float]:
    """Seconds from each CLIENT KILL TYPE pubsub to the watcher applying a write made then."""
    url = redis_server.url
    took: list[float] = []
    # A long check interval: only the resubscription can bring the write in.
    async with (
        Store(url) as store,
        Watcher(tenant, url, environ={}, check_interval=30, fleet_interval=0) as watcher,
    ):
        for i in range(kills):
            await asyncio.sleep(healthy)  # the connection is healthy for this long
            started = time.monotonic()
            assert await store.redis.client_kill_filter(_type="pubsub") >= 1
            result = await store.set(tenant, "ns", "k", i)
            await until(lambda r=result.revision: watcher.revision >= r, timeout=15)
            took.append(time.monotonic() - started)
    return took


@pytest.mark.real_redis
async def test_reconnects_stay_quick_after_repeated_kills(
    redis_server: RedisServer, tenant: str
) -> None:
    took = await _kill_and_catch_up(redis_server, tenant, kills=7, healthy=1.1)
    assert max(took) < 0.5, [f"{t:.3f}" for t in took]


@pytest.mark.real_redis
@pytest.mark.slow
async def test_a_dozen_kills_with_healthy_spells_between(
    redis_server: RedisServer, tenant: str
) -> None:
    took = await _kill_and_catch_up(redis_server, tenant, kills=11, healthy=1.5)
    assert max(took) < 0.5, [f"{t:.3f}" for t in took]
