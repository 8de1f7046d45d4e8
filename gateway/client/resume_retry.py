"""What a resumable upload (``gateway.client.resume``) tries again, how often and after what
pause: a dropped connection, a timeout, a 5xx (but 501) or a 429 is a ``Retry``; after each, a
pause of ``FIRST_PAUSE``, doubled at each failure in a row, at most ``MAX_PAUSE`` (or the 429's
``Retry-After``, within the same bound); ``MAX_ATTEMPTS`` failures in a row end in ``GaveUp``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp

from gateway.client.api import retry_after
from gateway.client.errors import CliError, network_errors
from gateway.client.output import Reporter
from gateway.retry import RetryPolicy

# Failures in a row that bring nothing new before giving up, and the pauses between them: about
# a minute of a gateway restarting or a network coming back; no jitter (the pause is shown).
MAX_ATTEMPTS = 5
FIRST_PAUSE = 1.0
MAX_PAUSE = 30.0


class Retry(Exception):
    """A failure worth resuming after: the connection dropped, a 5xx, a 429 (``wait``: its
    ``Retry-After``)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.wait = wait


class Gone(Exception):
    """The upload resource is no more (404: expired, cancelled)."""


class GaveUp(CliError):
    """``MAX_ATTEMPTS`` failures in a row: the state file stays for the next run."""


class Attempts:
    """The failures in a row that brought nothing new, and the pause after each."""

    def __init__(self, reporter: Reporter, action: str) -> None:
        self.reporter = reporter
        self.action = action
        self.count = 0
        self._policy = RetryPolicy(
            attempts=1 + MAX_ATTEMPTS, base_delay=FIRST_PAUSE, max_delay=MAX_PAUSE, jitter=0.0
        )

    def progressed(self) -> None:
        self.count = 0

    async def failed(self, exc: Retry) -> None:
        self.count += 1
        if self.count >= self._policy.attempts:
            raise GaveUp(
                f"{self.action} failed: {exc.message}; gave up after {MAX_ATTEMPTS} attempts"
                " in a row (run the same command again to resume)"
            )
        pause = self._policy.delay(self.count)
        if exc.wait is not None:
            pause = min(self._policy.max_delay, max(pause, exc.wait))
        self.reporter.info(
            f"{self.action}: {exc.message}; resuming in {pause:g} s"
            f" (attempt {self.count} of {MAX_ATTEMPTS})"
        )
        with self.reporter.waiting(f"resuming (attempt {self.count} of {MAX_ATTEMPTS})"):
            await self._policy.pause(self.count, pause)


@contextlib.contextmanager
def requesting(action: str, url: str, *, creating: bool = False) -> Iterator[None]:
    """A connection that drops or times out is a ``Retry``, and so is one that cannot be made
    once the upload exists (an instance restarting); other failures are ``CliError``s as
    ``network_errors`` words them."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        described = _described(exc, action, url)
        fatal = isinstance(exc, aiohttp.InvalidURL) or (
            creating and isinstance(exc, aiohttp.ClientConnectorError)
        )
        if fatal:
            raise described from None
        raise Retry(described.message.removeprefix(f"{action} failed: ")) from None


def _described(exc: BaseException, action: str, url: str) -> CliError:
    try:
        with network_errors(action, url):
            raise exc
    except CliError as described:
        return described
    return CliError(f"{action} failed: {type(exc).__name__}")  # pragma: no cover


def raise_retryable(resp: aiohttp.ClientResponse, *, creating: bool = False) -> None:
    """A 5xx (but 501: not implemented) or a 429 is worth trying again."""
    if resp.status == 429 or (resp.status >= 500 and resp.status != 501):
        wait = retry_after(resp.headers.get("Retry-After")) if resp.status == 429 else None
        raise Retry(f"the gateway answered {resp.status}", wait)
    if resp.status == 501 and not creating:
        raise Retry("the gateway no longer takes resumable uploads (501)")
