"""Operational endpoints: liveness (``/healthz``), readiness (``/readyz``) and ``/metrics``.

Liveness says only that the process serves; readiness says that it can do its work (the
dependencies ``server.readiness_requires`` lists answered their latest background check:
``gateway.server.observability.dependencies``) and that it is not draining for a shutdown. The
probe reads the latest results and never waits for a dependency, so it answers within
Kubernetes' one-second default timeout whatever S3 or SQS do.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import generate_latest

from gateway.errors import Unauthorized
from gateway.server.domain.auth import presented_token, same_secret, secret_digest
from gateway.server.http.render import json_response
from gateway.server.observability.dependencies import DependencyChecks
from gateway.server.observability.metrics import ActiveRequests, Metrics

log = logging.getLogger(__name__)

# What a caller told "not ready" is told to wait: about one background check period.
READINESS_RETRY_AFTER = 5
# The classic text format generate_latest writes (legacy metric names, nothing to escape), which
# every Prometheus version parses; newer clients' default content type says 1.0.0.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Probes:
    """The handlers of ``/healthz``, ``/readyz`` and ``/metrics``, built by the app factory.

    ``metrics_token``, when set, is required as a bearer token by ``/metrics`` (compared in
    constant time), for operators who cannot keep the port off the public network.
    """

    def __init__(
        self,
        dependencies: DependencyChecks,
        active: ActiveRequests,
        metrics: Metrics,
        metrics_token: str | None,
    ) -> None:
        self._dependencies = dependencies
        self._active = active
        self._registry = metrics.registry
        self._token_digest = secret_digest(metrics_token) if metrics_token else None

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 for as long as the process answers HTTP at all."""
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: 200 ``{"status": "ready", "checks"}`` when the required dependencies
        answered their latest check, else 503 ``{"status", "error", "checks"}`` saying why;
        ``checks`` has each dependency's latest result and its age."""
        reason, checks = self._dependencies.readiness()
        if self._active.draining:
            reason = "shutting down"
        if reason is None:
            return web.json_response({"status": "ready", "checks": checks})
        return json_response(
            503,
            {"status": "unavailable", "error": reason, "checks": checks},
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
