"""The one retry policy, for the server's outbound calls and the client's alike: a bounded number
of attempts, with an exponential backoff between them that is capped and jittered.

Each call site builds its policy where the call is, naming its attempts and backoff, and says
which failures are worth another attempt:
- ``call(once, retry_on=...)``: ``once(attempt)`` until it returns; an exception of ``retry_on``
  is tried again after the backoff (the last attempt's propagates), any other at once;
- ``tries()``: the attempt numbers, waiting between two, for loops whose reason to try again is
  not an exception (an answer's status, rules read back that differ);
- ``pause(retry, seconds=...)``: one wait, for loops that keep their own count (following a
  deployment counts again from 1 after news came; a 429 says how long to wait).

Jitter keeps instances that failed together (an S3 hiccup, a deployer restart, two instances
merging lifecycle rules at start) from retrying in lockstep. Standard library only: the client
imports this module (it imports nothing of the server), and it loads neither aiohttp nor botocore.
``tests/test_retry.py`` fails when code outside this module sleeps, but for its listed polls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (at least 1); before retry ``n`` (from 1) a wait of
    ``base_delay * 2 ** (n - 1)``, at most ``max_delay``, of which a random part, up to the
    fraction ``jitter`` (half by default; 0: none), is taken off."""

    attempts: int
    base_delay: float
    max_delay: float
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("a retry policy does not wait a negative time")
        if not 0 <= self.jitter <= 1:
            raise ValueError("a retry policy's jitter is a fraction, from 0 to 1")

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (from 1)."""
        return float(min(self.base_delay * 2 ** (retry - 1), self.max_delay))

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (from 1): the ceiling less a random part of
        it, at most ``jitter`` of it."""
        ceiling = self.ceiling(retry)
        return ceiling * (1 - self.jitter) + ceiling * self.jitter * self.random()

    async def pause(self, retry: int, seconds: float | None = None) -> None:
        """Wait before retry number ``retry`` (from 1): ``seconds`` when given (what the other
        side asked for in a ``Retry-After``, or a ``delay(retry)`` drawn and shown before),
        else the backoff."""
        await asyncio.sleep(self.delay(retry) if seconds is None else seconds)

    async def tries(self) -> AsyncIterator[int]:
        """Attempt numbers from 1 to ``attempts``, waiting the backoff between two; the caller
        breaks out (or returns) on success and handles the last failure itself."""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await self.pause(attempt - 1)
            yield attempt

    async def call(
        self,
        once: Callable[[int], Awaitable[T]],
        *,
        retry_on: tuple[type[Exception], ...],
    ) -> T:
        """``await once(attempt)`` for attempts from 1 until one returns, and its result. An
        exception of ``retry_on`` is tried again after the backoff, unless the attempt was the
        last: then it propagates, as any other exception does at once."""
        attempt = 1
        while True:
            try:
                return await once(attempt)
            except retry_on:
                if attempt >= self.attempts:
                    raise
            await self.pause(attempt)
            attempt += 1
