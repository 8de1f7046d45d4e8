"""Limits per identity, per instance (``auth.limits``): a request rate with a burst, and a number
of uploads in flight.

Both are kept in this process's memory: N instances (or workers) allow N times the configured
figures, which is what ``docs/operations.md`` tells operators. Past a limit, ``TooManyRequests``
carries ``Retry-After`` and the ``RateLimit-Policy`` / ``RateLimit`` fields of the IETF draft
(draft-ietf-httpapi-ratelimit-headers-08 and later): ``"api";q=<burst>;w=<seconds the bucket
takes to refill>`` and ``"api";r=<requests left>;t=<seconds until the next one is allowed>``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from gateway.errors import TooManyRequests

Clock = Callable[[], float]

# Buckets of identities that stopped asking are dropped once this many are kept: a full bucket
# and no bucket allow the same, so forgetting one changes nothing.
MAX_TRACKED_IDENTITIES = 10_000
# What a refused upload is told: uploads take seconds to minutes, one may well end by then.
UPLOAD_RETRY_AFTER = 5
RATE_POLICY = "api"
UPLOAD_POLICY = "uploads"


class RateLimiter:
    """A token bucket per identity: ``rate`` requests per second on average, up to ``burst`` at
    once after a quiet moment."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        assert rate > 0 and burst >= 1
        self._rate = rate
        self._burst = burst
        self._clock = clock
        # identity -> (tokens left, when that was computed)
        self._buckets: dict[str, tuple[float, float]] = {}
        window = max(1, math.ceil(burst / rate))
        self.policy = f'"{RATE_POLICY}";q={burst};w={window}'

    def take(self, key: str) -> None:
        """Count one request of ``key``; ``TooManyRequests`` if its bucket is empty."""
        now = self._clock()
        tokens, updated = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + max(0.0, now - updated) * self._rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            wait = max(1, math.ceil((1 - tokens) / self._rate))
            raise TooManyRequests(
                f"too many requests: this token may make {self._rate:g} per second "
                f"(bursts of {self._burst}); retry in {wait} s",
                retry_after=wait,
                policy=self.policy,
                state=f'"{RATE_POLICY}";r=0;t={wait}',
            )
        self._buckets[key] = (tokens - 1, now)
        if len(self._buckets) > MAX_TRACKED_IDENTITIES:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        refill = self._burst / self._rate
        for key, (tokens, updated) in list(self._buckets.items()):
            if tokens + (now - updated) * self._rate >= self._burst or now - updated > refill:
                del self._buckets[key]


class UploadSlots:
    """At most ``limit`` uploads in flight per key (the identity that created the source)."""

    def __init__(self, limit: int) -> None:
        assert limit >= 1
        self._limit = limit
        self._in_flight: dict[str, int] = {}
        self.policy = f'"{UPLOAD_POLICY}";q={limit};qu="concurrent-requests"'

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        """One slot of ``key`` for the duration of the block; ``TooManyRequests`` when all of
        them are taken."""
        count = self._in_flight.get(key, 0)
        if count >= self._limit:
            raise TooManyRequests(
                f"too many uploads at once: sources created by this token may have "
                f"{self._limit} in flight; retry when one has finished",
                retry_after=UPLOAD_RETRY_AFTER,
                policy=self.policy,
                state=f'"{UPLOAD_POLICY}";r=0;t={UPLOAD_RETRY_AFTER}',
            )
        self._in_flight[key] = count + 1
        try:
            yield
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]
