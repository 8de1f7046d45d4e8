"""Operational endpoints: liveness (``/healthz``), readiness (``/readyz``) and ``/metrics``.

Liveness says only that the process serves; readiness says that it can do its work (the bucket
answers ``HeadBucket``, and the deployment queue ``GetQueueUrl`` when deployments go to SQS) and
that it is not draining for a shutdown. Load balancers and Kubernetes
probe both every few seconds, from every node: the bucket check is cached and shared, so a probe
storm costs at most one ``HeadBucket`` per ``READINESS_CACHE_SECONDS`` per instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import generate_latest

from gateway.errors import GatewayError, NotFound, Unauthorized
from gateway.server.domain.auth import presented_token, same_secret, secret_digest
from gateway.server.domain.signing import Clock
from gateway.server.http.render import json_response
from gateway.server.observability.metrics import ActiveRequests, Metrics

log = logging.getLogger(__name__)

# Long enough that a storm of probes is one S3 call, short enough that an instance whose bucket
# went away leaves the load balancer within a probe period or two.
READINESS_CACHE_SECONDS = 5.0
# What a failed readiness check tells a caller asking again: as soon as the cache runs out.
READINESS_RETRY_AFTER = 5
# The classic text format generate_latest writes (legacy metric names, nothing to escape), which
# every Prometheus version parses; newer clients' default content type says 1.0.0.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Readiness:
    """The outcome of one readiness check: ``reason`` is None when ready."""

    reason: str | None
    checked_at: float

    @property
    def ready(self) -> bool:
        return self.reason is None


# A dependency readiness asks after: its name in the reason given, and the check itself.
Probe = tuple[str, Callable[[], Awaitable[None]]]


class ReadinessCheck:
    """Runs ``probes`` at most once per ``ttl`` seconds (by ``clock``), however many ask at once.

    Each probe returns when its dependency is usable and raises ``GatewayError`` (whose message
    is safe to show) when it is not; the first that fails is the reason given.
    """

    def __init__(
        self,
        probes: Sequence[Probe],
        clock: Clock,
        ttl: float = READINESS_CACHE_SECONDS,
    ) -> None:
        self._probes = list(probes)
        self._clock = clock
        self._ttl = ttl
        self._last: Readiness | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> Readiness | None:
        last = self._last
        if last is not None and 0 <= self._clock() - last.checked_at < self._ttl:
            return last
        return None

    async def check(self) -> Readiness:
        cached = self._fresh()
        if cached is not None:
            return cached
        # Concurrent probes wait for the one check in progress instead of starting their own.
        async with self._lock:
            cached = self._fresh()
            if cached is not None:
                return cached
            self._last = result = Readiness(await self._failure(), self._clock())
            return result

    async def _failure(self) -> str | None:
        for name, probe in self._probes:
            try:
                await probe()
            except NotFound:
                return f"{name}: the bucket does not exist"
            except GatewayError as exc:
                log.warning("not ready: %s: %s", name, exc.message)
                return f"{name}: {exc.message}"
        return None


class Probes:
    """The handlers of ``/healthz``, ``/readyz`` and ``/metrics``, built by the app factory.

    ``metrics_token``, when set, is required as a bearer token by ``/metrics`` (compared in
    constant time), for operators who cannot keep the port off the public network.
    """

    def __init__(
        self,
        readiness: ReadinessCheck,
        active: ActiveRequests,
        metrics: Metrics,
        metrics_token: str | None,
    ) -> None:
        self.readiness = readiness
        self._active = active
        self._registry = metrics.registry
        self._token_digest = secret_digest(metrics_token) if metrics_token else None

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 for as long as the process answers HTTP at all."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 when the bucket (and the deployment queue, for SQS) answers, else 503
        ``{"status", "error"}`` saying why."""
        if self._active.draining:
            readiness = Readiness("shutting down", 0.0)
        else:
            readiness = await self.readiness.check()
        if readiness.ready:
            return web.json_response({"status": "ready"})
        return json_response(
            503,
            {"status": "unavailable", "error": readiness.reason},
            {"Retry-After": str(READINESS_RETRY_AFTER)},
        )

    async def on_shutdown(self, app: web.Application) -> None:
        """``on_shutdown`` hook: readiness fails from the moment a shutdown begins.

        ``gateway serve`` sets ``draining`` itself as soon as SIGTERM arrives; this hook covers
        any other runner (aiohttp's ``run_app``, tests)."""
        self._active.draining = True

    async def metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the application's registry in Prometheus text format."""
        if self._token_digest is not None:
            presented = presented_token(request.headers.get("Authorization")) or ""
            if not same_secret(presented, self._token_digest):
                raise Unauthorized("metrics need 'Authorization: Bearer <metrics token>'")
        response = web.Response(body=generate_latest(self._registry))
        # Set as a header: aiohttp's content_type property refuses a value with parameters.
        response.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return response
