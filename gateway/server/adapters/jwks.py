"""The identity provider's signing keys, fetched from ``auth.jwt.jwks_url`` by PyJWT's
``PyJWKClient`` and kept in memory.

When they are fetched: once at start, every ``refresh_seconds`` in the background (so a key the
provider withdrew stops working), and when a token names a ``kid`` the cached set does not have
(a rotation), at most once per ``kid`` per ``UNKNOWN_KID_RETRY_SECONDS``. Never once per request:
a known key is a dictionary look-up. A fetch that fails keeps the keys already held, so tokens go
on verifying while the provider is down. Fetches run in a thread (``PyJWKClient`` uses urllib)
with ``jwks_timeout``; a request waits for a fetch at most ``MAX_REQUEST_WAIT`` seconds, so a
provider that hangs makes a token with an unknown ``kid`` a quick 401, not a hanging request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from jwt import PyJWK, PyJWKClient

log = logging.getLogger(__name__)

# A provider publishes a new key before it signs with it; asking again about the same unknown
# kid more often than this would let anyone make the gateway hammer the provider.
UNKNOWN_KID_RETRY_SECONDS = 60.0
# Unknown kids remembered for the rule above; the oldest are forgotten first.
MAX_REMEMBERED_KIDS = 1024
# How long a request waits for a fetch it caused; the fetch itself goes on for jwks_timeout.
MAX_REQUEST_WAIT = 1.0
USER_AGENT = "sources-gateway"


class JwksKeys:
    """The signing keys of one JWKS URL (see the module's docstring for when they are fetched).

    ``clock`` (seconds, any origin) times the unknown-kid rule; tests move it."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        refresh_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_fetch: Callable[[bool], None] = lambda ok: None,
    ) -> None:
        self._url = url
        self._client = PyJWKClient(
            url, cache_jwk_set=False, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._on_fetch = on_fetch
        self._keys: dict[str, PyJWK] = {}
        self._asked: OrderedDict[str, float] = OrderedDict()  # unknown kid -> when it was
        self._fetch: asyncio.Task[None] | None = None

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    async def key_for(self, kid: str | None) -> PyJWK | None:
        key = self._lookup(kid)
        if key is not None or kid is None or not self._may_ask(kid):
            return key
        fetch = self._start_fetch()
        # Shielded: the fetch outlives a request that stops waiting, and its keys stay.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fetch), MAX_REQUEST_WAIT)
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            # A provider with one key may leave kid out of its tokens.
            only = list(self._keys.values())
            return only[0] if len(only) == 1 else None
        return self._keys.get(kid)

    def _may_ask(self, kid: str) -> bool:
        now = self._clock()
        last = self._asked.get(kid)
        if last is not None and 0 <= now - last < UNKNOWN_KID_RETRY_SECONDS:
            return False
        self._asked[kid] = now
        self._asked.move_to_end(kid)
        while len(self._asked) > MAX_REMEMBERED_KIDS:
            self._asked.popitem(last=False)
        return True

    def _start_fetch(self) -> asyncio.Task[None]:
        """The fetch in progress, or a new one: concurrent causes share one."""
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.create_task(self._fetch_keys())
        return self._fetch

    async def _fetch_keys(self) -> None:
        try:
            keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        except Exception as exc:
            # Any failure (unreachable, an error status, not JSON, no usable key) keeps the
            # keys held: the provider being down must not log everyone out.
            self._on_fetch(False)
            log.warning(
                "could not fetch the identity provider's keys from %s (%s); keeping the %d cached",
                self._url,
                type(exc).__name__,
                len(self._keys),
            )
            return
        self._on_fetch(True)
        self._keys = {key.key_id: key for key in keys if key.key_id}
        log.info("identity provider keys fetched: %s", ", ".join(self._keys) or "none")

    async def refreshed(self) -> None:
        """Fetch the keys now (or wait for the fetch in progress)."""
        await asyncio.shield(self._start_fetch())

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[JwksKeys]:
        """Fetch the keys at start, then every ``refresh_seconds`` until the block ends."""
        await self.refreshed()
        task = asyncio.create_task(self._refresh_forever())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.refreshed()
