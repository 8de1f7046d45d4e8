"""What the gateway depends on (the bucket, the deployer's queue), checked in the background.

Each dependency is checked at start (a failure is logged as a warning before the first request
is served), then every ``server.readiness_interval`` seconds, each check bounded by
``CHECK_TIMEOUT``. Probes and handlers read the latest results, with their age, and never wait
for a check: ``/readyz`` answers at once whatever the dependencies do, and a probe storm costs
nothing. Which dependencies fail readiness is ``server.readiness_requires``; the others are
reported (in ``/readyz``'s body and ``gateway_dependency_up``) without taking the instance out
of its load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Gauge

from gateway.errors import GatewayError, NotFound

log = logging.getLogger(__name__)

# A check that has not answered by then counts as failed; the next one starts on schedule.
CHECK_TIMEOUT = 10.0
# How long start-up waits for the first checks (a warning names what failed) before serving.
STARTUP_WAIT = 5.0

# A dependency: its name (as ``server.readiness_requires`` spells it) and its check, which
# returns when the dependency is usable and raises ``GatewayError`` (whose message is safe to
# show) when it is not.
Check = tuple[str, Callable[[], Awaitable[None]]]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome: ``error`` is None when the dependency answered."""

    error: str | None
    checked_at: float


class DependencyChecks:
    """The latest result of each check in ``checks``, kept fresh by ``running()``."""

    def __init__(
        self,
        checks: Sequence[Check],
        required: Collection[str],
        interval: float,
        clock: Callable[[], float],
        gauge: Gauge,
    ) -> None:
        self._checks = list(checks)
        self._required = frozenset(required)
        self._interval = interval
        self._clock = clock
        self._gauge = gauge
        self._results: dict[str, CheckResult] = {}

    def failure(self, name: str) -> str | None:
        """Why ``name`` failed its latest check; None if it answered (or is not checked)."""
        result = self._results.get(name)
        return result.error if result is not None else None

    def readiness(self) -> tuple[str | None, dict[str, Any]]:
        """Why the instance is not ready (None when it is), and every check's latest result."""
        now = self._clock()
        reason: str | None = None
        checks: dict[str, Any] = {}
        for name, _ in self._checks:
            result = self._results.get(name)
            required = name in self._required
            if result is None:
                checks[name] = {"status": "unknown", "required": required}
                reason = reason or (f"{name}: not checked yet" if required else None)
                continue
            shown: dict[str, Any] = {
                "status": "ok" if result.error is None else "unavailable",
                "required": required,
                "age_seconds": round(max(0.0, now - result.checked_at), 1),
            }
            if result.error is not None:
                shown["error"] = result.error
                if required and reason is None:
                    reason = f"{name}: {result.error}"
            checks[name] = shown
        return reason, checks

    async def check_all(self) -> None:
        """Run every check once, concurrently, and keep their results."""
        await asyncio.gather(*(self._check(name, check) for name, check in self._checks))

    async def _check(self, name: str, check: Callable[[], Awaitable[None]]) -> None:
        error: str | None = None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await check()
        except NotFound:
            error = "the bucket does not exist"
        except GatewayError as exc:
            error = exc.message
        except TimeoutError:
            error = f"no answer within {CHECK_TIMEOUT:g} s"
        except Exception:
            log.exception("the %s check failed unexpectedly", name)
            error = "the check failed"
        previous = self._results.get(name)
        if error is not None and (previous is None or previous.error != error):
            required = "not ready" if name in self._required else "reported, still ready"
            log.warning("dependency %s unavailable (%s): %s", name, required, error)
        elif error is None and previous is not None and previous.error is not None:
            log.info("dependency %s answers again", name)
        self._results[name] = CheckResult(error, self._clock())
        self._gauge.labels(name).set(0 if error else 1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Check everything now and every ``interval`` seconds after, until the block ends.

        The block is entered when the first checks are done, or after ``STARTUP_WAIT`` if a
        dependency takes longer (it is then "not checked yet" until it answers)."""
        first = asyncio.create_task(self.check_all())
        task = asyncio.create_task(self._check_forever(first))
        try:
            done, _ = await asyncio.wait({first}, timeout=STARTUP_WAIT)
            if not done:
                log.warning(
                    "dependencies not checked within %g s of start; serving meanwhile", STARTUP_WAIT
                )
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _check_forever(self, first: asyncio.Task[None]) -> None:
        try:
            await first
            while True:
                await asyncio.sleep(self._interval)
                await self.check_all()
        finally:
            first.cancel()
