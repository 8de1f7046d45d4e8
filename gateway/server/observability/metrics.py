"""The gateway's Prometheus metrics, and the count of requests in flight that shutdown drains."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Methods, routes and statuses are few (unknown methods and paths fold into "unmatched" routes),
# yet the cache of their series is bounded all the same.
_MAX_CACHED_SERIES = 1024


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "HTTP requests handled.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer a request, body transfer included.",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.bytes_uploaded = Counter(
            "gateway_upload_bytes", "Bytes received in upload bodies.", registry=r
        )
        self.bytes_downloaded = Counter(
            "gateway_download_bytes", "Bytes sent in download bodies.", registry=r
        )
        self.uploads = Counter(
            "gateway_uploads", "Uploads by outcome (completed, aborted).", ["outcome"], registry=r
        )
        self.s3_errors = Counter(
            "gateway_s3_errors", "Failed object-store calls.", ["operation"], registry=r
        )
        self.send_timeouts = Counter(
            "gateway_send_timeouts",
            "Downloads given up because their client stopped reading (server.send_timeout).",
            registry=r,
        )
        self.deployments = Counter(
            "gateway_deployments",
            "Deployments by outcome (forwarded, rejected, failed).",
            ["outcome"],
            registry=r,
        )
        self.transfers = Gauge(
            "gateway_inflight_transfers",
            "Uploads and downloads in progress.",
            ["direction"],
            registry=r,
        )
        self.buffer_bytes = Gauge(
            "gateway_buffer_bytes", "Bytes of part buffers reserved by uploads.", registry=r
        )
        # The labelled series of every request, looked up once: ``labels()`` validates and locks.
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one handled request and its duration."""
        series = self._request_series.get((method, route, status))
        if series is None:
            series = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            if len(self._request_series) < _MAX_CACHED_SERIES:
                self._request_series[(method, route, status)] = series
        series[0].inc()
        series[1].observe(seconds)


class DeploymentMetrics:
    """What followers and deployers do, on the gateway's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.finished = Counter(
            "gateway_deployments_finished",
            "Deployments that reached a final status, by status.",
            ["status"],
            registry=registry,
        )
        self.followers = Gauge(
            "gateway_deployment_followers",
            "Event streams (GET .../events) connected to this instance.",
            registry=registry,
        )
        self.events = Counter(
            "gateway_deployment_events",
            "Events received from deployers (first delivery only), by type.",
            ["type"],
            registry=registry,
        )


class ActiveRequests:
    """The requests being handled, and whether this instance is draining for a shutdown.

    ``gateway serve`` waits on it after SIGTERM (``gateway.server.serve``); readiness fails
    while draining, so load balancers stop sending new work."""

    def __init__(self) -> None:
        self.count = 0
        self._draining = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    @draining.setter
    def draining(self, value: bool) -> None:
        if value:
            self._draining.set()
        else:
            self._draining.clear()

    @property
    def drain_started(self) -> asyncio.Event:
        """Set when draining begins: long-lived responses (event streams) end then, cleanly,
        rather than hold the shutdown until its timeout."""
        return self._draining

    def begin(self) -> None:
        self.count += 1
        self._idle.clear()

    def end(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request is in flight (callers bound the wait with a timeout)."""
        await self._idle.wait()
