"""The one retry policy: bounded attempts, exponential backoff, a cap, and jitter."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.config import ForwardConfig, StorageConfig
from gateway.server.adapters.retry import RetryPolicy


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.5, max_delay=30.0, random=lambda: 1.0)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert policy.delay(7) == 30.0
    assert policy.delay(10) == 30.0


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999])
def test_jitter_takes_off_at_most_half(draw: float) -> None:
    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=8.0, random=lambda: draw)
    for retry in range(1, 6):
        ceiling = policy.ceiling(retry)
        assert ceiling / 2 <= policy.delay(retry) <= ceiling
    assert policy.delay(3) == pytest.approx(4.0 / 2 + 4.0 / 2 * draw)


def test_real_jitter_spreads_the_waits() -> None:
    policy = RetryPolicy(attempts=3, base_delay=1.0, max_delay=1.0)
    assert len({policy.delay(1) for _ in range(20)}) > 1


async def test_tries_are_bounded_and_wait_between() -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.05, random=lambda: 1.0)
    started = time.monotonic()
    seen = [attempt async for attempt in policy.tries()]
    assert seen == [1, 2, 3]
    assert time.monotonic() - started >= 0.1  # two waits of 0.05 s, none before the first


async def test_first_attempt_does_not_wait() -> None:
    policy = RetryPolicy(attempts=2, base_delay=5.0, max_delay=5.0)
    async with asyncio.timeout(1):
        async for attempt in policy.tries():
            assert attempt == 1
            break


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0, base_delay=0.1, max_delay=1.0)


def test_built_from_config() -> None:
    forward = RetryPolicy.for_forwarder(ForwardConfig(retries=2, backoff_seconds=0.25))
    assert (forward.attempts, forward.base_delay, forward.max_delay) == (3, 0.25, 30.0)
    storage = RetryPolicy.for_storage(StorageConfig(bucket="b", max_attempts=4))
    assert storage.attempts == 4
    assert storage.max_delay >= storage.base_delay > 0
