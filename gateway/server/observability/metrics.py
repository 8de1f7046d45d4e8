"""The gateway's Prometheus metrics, and the count of requests in flight that shutdown drains."""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Name and help of the two families.
_REQUESTS = ("gateway_requests", "HTTP requests handled.")
_DURATIONS = (
    "gateway_request_duration_seconds",
    "Time to answer a request, body transfer included.",
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# The buckets' "le" labels as prometheus_client writes them (0.005, 1.0, ..., +Inf).
_LE = (*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf")


class RequestMetrics(Collector):
    """``gateway_requests_total`` and ``gateway_request_duration_seconds``, counted in plain
    integers and turned into Prometheus families when scraped.

    Every request updates both; prometheus_client's own counter and histogram take a lock and
    look up their labelled series on each update, which costs a ``POST /v1/sources`` more than
    its signatures do (BENCHMARKS.md, 1c). The event loop is the only writer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        # Per (method, route): how many durations fell in each bucket (not cumulative; the last
        # slot is above every bound), then their sum.
        self._durations: dict[tuple[str, str], list[float]] = {}
        # When each series above began (by its key): prometheus_client's own write it as
        # ``_created``.
        self._created: dict[tuple[str, str, int] | tuple[str, str], float] = {}
        registry.register(self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counts = self._counts
        key = (method, route, status)
        count = counts.get(key)
        if count is None:
            count = 0
            self._created[key] = time.time()
        counts[key] = count + 1
        durations = self._durations.get((method, route))
        if durations is None:
            durations = self._durations[(method, route)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            self._created[(method, route)] = time.time()
        durations[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        durations[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*_REQUESTS, labels=["method", "route", "status"])
        created = self._created
        for (method, route, status), count in list(self._counts.items()):
            requests.add_metric(
                [method, route, str(status)], count, created=created[(method, route, status)]
            )
        yield requests
        latency = HistogramMetricFamily(*_DURATIONS, labels=["method", "route"])
        for (method, route), durations in list(self._durations.items()):
            buckets: list[tuple[str, float]] = []
            seen = 0.0
            for le, in_bucket in zip(_LE, durations, strict=False):  # the sum is left out
                seen += in_bucket
                buckets.append((le, seen))
            latency.add_metric([method, route], buckets, sum_value=durations[-1])
            # HistogramMetricFamily takes no creation time: its sample is added as Histogram's.
            labels = {"method": method, "route": route}
            latency.samples.append(
                Sample(f"{latency.name}_created", labels, created[(method, route)])
            )
        yield latency

    def describe(self) -> Iterator[Metric]:
        # Families without samples: the registry learns the names without a scrape.
        yield CounterMetricFamily(*_REQUESTS)
        yield HistogramMetricFamily(*_DURATIONS)


class Metrics:
    """The gateway's Prometheus metrics, in a registry of its own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = RequestMetrics(r)
        self.bytes_uploaded = Counter(
            "gateway_upload_bytes", "Bytes received in upload bodies.", registry=r
        )
        self.bytes_downloaded = Counter(
            "gateway_download_bytes", "Bytes sent in download bodies.", registry=r
        )
        self.uploads = Counter(
            "gateway_uploads", "Uploads by outcome (completed, aborted).", ["outcome"], registry=r
        )
        self.resumable_read_back = Counter(
            "gateway_resumable_read_back_bytes",
            "Bytes of resumable uploads read back from the bucket to be checked at completion"
            " (their running check was not in this instance's memory).",
            registry=r,
        )
        self.s3_errors = Counter(
            "gateway_s3_errors", "Failed object-store calls.", ["operation"], registry=r
        )
        self.download_relays = Counter(
            "gateway_download_relays",
            "Downloads by how their body was relayed (splice, copy).",
            ["relay"],
            registry=r,
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
        self.dependency_up = Gauge(
            "gateway_dependency_up",
            "1 when the dependency (storage, deployer) answered its latest check, else 0.",
            ["dependency"],
            registry=r,
        )
        self.jwks_fetches = Counter(
            "gateway_jwks_fetches",
            "Fetches of the identity provider's keys (auth.jwt), by outcome (ok, failed).",
            ["outcome"],
            registry=r,
        )


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
            "Deployment followers connected to this instance, by transport: sse (GET .../events)"
            " or websocket (GET /v1/apps/{app}/deployments/stream).",
            ["transport"],
            registry=registry,
        )
        for transport in ("sse", "websocket"):
            self.followers.labels(transport)  # both series exist from the start, at 0
        self.events = Counter(
            "gateway_deployment_events",
            "Events received from deployers (first delivery only), by type.",
            ["type"],
            registry=registry,
        )


class PlatformMetrics:
    """What the platform's own clients do: token exchanges and deployments streams."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.exchanges = Counter(
            "gateway_token_exchanges",
            "POST /v1/tokens/exchange by outcome (issued, refused).",
            ["outcome"],
            registry=registry,
        )
        self.stream_auth_failures = Counter(
            "gateway_stream_auth_failures",
            "Deployments streams closed before or at their auth frame, by reason (timeout, "
            "not_json, too_large, not_auth, bad_token, forbidden).",
            ["reason"],
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
