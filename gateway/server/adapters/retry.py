"""The one retry policy of the gateway's outbound calls: a bounded number of attempts, with an
exponential backoff between them that is capped and jittered.

Used for part uploads to S3, the http forwarder and the lifecycle merge. Jitter keeps instances
that failed together (an S3 hiccup, a deployer restart, two instances merging lifecycle rules at
start) from retrying in lockstep.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from gateway.config import ForwardConfig, StorageConfig

# S3 answers a throttled or failed part within milliseconds; a few short waits ride out a blip
# without holding the client's upload for long.
STORAGE_BASE_DELAY = 0.1
STORAGE_MAX_DELAY = 2.0
# A deployer that is restarting takes seconds; waiting longer than this helps nobody.
FORWARDER_MAX_DELAY = 30.0
# Lifecycle rules race only with other writers of the same bucket's configuration.
LIFECYCLE_ATTEMPTS = 3
LIFECYCLE_BASE_DELAY = 0.2
LIFECYCLE_MAX_DELAY = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all (at least 1); before retry ``n`` (from 1) a wait of
    ``base_delay * 2 ** (n - 1)``, at most ``max_delay``, of which a random half is taken off."""

    attempts: int
    base_delay: float
    max_delay: float
    random: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("a retry policy makes at least one attempt")

    @classmethod
    def for_storage(cls, config: StorageConfig) -> RetryPolicy:
        return cls(config.max_attempts, STORAGE_BASE_DELAY, STORAGE_MAX_DELAY)

    @classmethod
    def for_forwarder(cls, config: ForwardConfig) -> RetryPolicy:
        return cls(config.retries + 1, config.backoff_seconds, FORWARDER_MAX_DELAY)

    @classmethod
    def for_lifecycle(cls) -> RetryPolicy:
        return cls(LIFECYCLE_ATTEMPTS, LIFECYCLE_BASE_DELAY, LIFECYCLE_MAX_DELAY)

    def ceiling(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (from 1)."""
        return float(min(self.base_delay * 2 ** (retry - 1), self.max_delay))

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (from 1): between half the ceiling and all
        of it."""
        ceiling = self.ceiling(retry)
        return ceiling / 2 + ceiling / 2 * self.random()

    async def tries(self) -> AsyncIterator[int]:
        """Attempt numbers from 1 to ``attempts``, waiting the backoff between two; the caller
        breaks out (or returns) on success and handles the last failure itself."""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                await asyncio.sleep(self.delay(attempt - 1))
            yield attempt
