"""GET /metrics: Prometheus text format, and the counters moving with real traffic."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import boto3
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.server.observability.metrics import LATENCY_BUCKETS, RequestMetrics

from .helpers import MOTO_CREDENTIALS, SMALL_PART, Gateway, StartGateway, sqs_forward
from .ports import free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gateway: Gateway, http: aiohttp.ClientSession) -> Samples:
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_counters_move_with_an_upload_and_a_download(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    before = await scrape(gateway, http)
    data = os.urandom(SMALL_PART * 2 + 100)
    source = await gateway.uploaded_source(http, data)
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == data
    async with http.get(source["download_url"], headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 206
        await resp.read()
    after = await scrape(gateway, http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/sources/{id}"
    assert moved("gateway_requests_total", method="POST", route="/v1/sources", status="201") == 1
    assert moved("gateway_requests_total", method="PUT", route=route, status="200") == 1
    assert moved("gateway_requests_total", method="GET", route=route, status="200") == 1
    assert moved("gateway_requests_total", method="GET", route=route, status="206") == 1
    assert moved("gateway_request_duration_seconds_count", method="PUT", route=route) == 1
    assert moved("gateway_upload_bytes_total") == len(data)
    assert moved("gateway_download_bytes_total") == len(data) + 10
    assert moved("gateway_uploads_total", outcome="completed") == 1
    assert moved("gateway_uploads_total", outcome="aborted") == 0
    assert value(after, "gateway_inflight_transfers", direction="upload") == 0
    assert value(after, "gateway_inflight_transfers", direction="download") == 0
    # The scrape itself is counted too, under its route (never under a concrete path).
    assert value(after, "gateway_requests_total", method="GET", route="/metrics", status="200") >= 1


async def test_declared_families(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {
        "gateway_requests",
        "gateway_request_duration_seconds",
        "gateway_upload_bytes",
        "gateway_download_bytes",
        "gateway_uploads",
        "gateway_s3_errors",
        "gateway_deployments",
        "gateway_inflight_transfers",
    } <= families


async def test_aborted_upload_and_unknown_routes_are_counted(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    async with http.put(
        source["upload_url"], data=b"payload", headers={"Content-MD5": wrong_md5}
    ) as resp:
        assert resp.status == 400
    async with http.get(f"{gateway.url}/no/such/{uuid.uuid4()}") as resp:
        assert resp.status == 404
    samples = await scrape(gateway, http)
    assert value(samples, "gateway_uploads_total", outcome="aborted") == 1
    assert value(samples, "gateway_uploads_total", outcome="completed") == 0
    # Unknown paths share one label value: no unbounded label cardinality from scanners.
    assert (
        value(samples, "gateway_requests_total", method="GET", route="unmatched", status="404") == 1
    )


async def test_s3_errors_are_counted(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"storage": {"bucket": f"missing-{uuid.uuid4().hex[:12]}"}})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"payload") as resp:
        assert resp.status == 502
    samples = await scrape(gateway, http)
    assert value(samples, "gateway_s3_errors_total", operation="PutObject") == 1
    assert value(samples, "gateway_uploads_total", outcome="aborted") == 1


@pytest.mark.parametrize(
    ("chunked", "gauge", "labels", "expected"),
    [
        (False, "gateway_inflight_transfers", {"direction": "upload"}, 1),
        # A chunked body reserves one part buffer against sources.max_buffer_bytes.
        (True, "gateway_buffer_bytes", {}, SMALL_PART),
    ],
    ids=["inflight", "buffer"],
)
async def test_gauges_during_a_paused_upload(
    gateway: Gateway,
    http: aiohttp.ClientSession,
    chunked: bool,
    gauge: str,
    labels: dict[str, str],
    expected: float,
) -> None:
    source = await gateway.create_source(http)
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await release.wait()
        yield b"y" * 1000

    headers = {} if chunked else {"Content-Length": "2000"}
    upload = asyncio.create_task(http.put(source["upload_url"], data=body(), headers=headers))
    try:
        for _ in range(100):
            samples = await scrape(gateway, http)
            if value(samples, gauge, **labels) > 0:
                break
            await asyncio.sleep(0.05)
        assert value(samples, gauge, **labels) == expected
        assert value(samples, "gateway_upload_bytes_total") == 1000
    finally:
        release.set()
        resp = await upload
        assert resp.status == 200
        resp.release()
    assert value(await scrape(gateway, http), gauge, **labels) == 0


async def test_metrics_token(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"metrics": {"token": "metrics-secret-123"}})
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in await resp.json()
    bad = {"Authorization": "Bearer wrong"}
    async with http.get(f"{gateway.url}/metrics", headers=bad) as resp:
        assert resp.status == 401
    good = {"Authorization": "Bearer metrics-secret-123"}
    async with http.get(f"{gateway.url}/metrics", headers=good) as resp:
        assert resp.status == 200
        assert "gateway_requests_total" in await resp.text()


async def test_metrics_disabled(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"metrics": {"enabled": False}})
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert resp.status == 404


async def test_deployments_are_counted(
    start_gateway: StartGateway, http: aiohttp.ClientSession, moto_endpoint: str
) -> None:
    queue = f"deployments-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    ).create_queue(QueueName=queue)
    gateway = await start_gateway({"deployments": sqs_forward(queue, moto_endpoint)})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"\x1f\x8b" + os.urandom(100)) as resp:
        assert resp.status == 200
    url = f"{gateway.url}/v1/apps/my-app/deployments"
    good = {"deployment": {"git_ref": "v1", "download_url": source["download_url"]}}
    async with http.post(url, json=good, headers=gateway.auth) as resp:
        assert resp.status == 201, await resp.text()
    bad = {"deployment": {"download_url": "ftp://example.com/a.tar.gz"}}
    async with http.post(url, json=bad, headers=gateway.auth) as resp:
        assert resp.status == 422
    samples = await scrape(gateway, http)
    assert value(samples, "gateway_deployments_total", outcome="forwarded") == 1
    assert value(samples, "gateway_deployments_total", outcome="rejected") == 1
    route = "/v1/apps/{app}/deployments"
    assert value(samples, "gateway_requests_total", method="POST", route=route, status="201") == 1


async def test_failed_deployments_are_counted(
    start_gateway: StartGateway, http: aiohttp.ClientSession, moto_endpoint: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    forward = sqs_forward("deployments", dead)
    forward["forward"].update({"timeout": 1, "retries": 0})
    gateway = await start_gateway({"deployments": forward})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"\x1f\x8b" + os.urandom(100)) as resp:
        assert resp.status == 200
    body = {"deployment": {"download_url": source["download_url"]}}
    url = f"{gateway.url}/v1/apps/my-app/deployments"
    async with http.post(url, json=body, headers=gateway.auth) as resp:
        assert resp.status in (502, 503), await resp.text()
    samples = await scrape(gateway, http)
    assert value(samples, "gateway_deployments_total", outcome="failed") == 1
    assert value(samples, "gateway_deployments_total", outcome="forwarded") == 0


def test_request_metrics_read_as_prometheus_clients_own_would() -> None:
    """The request counter and histogram, kept in plain integers, scrape exactly as
    prometheus_client's ``Counter`` and ``Histogram`` with the same observations would."""
    ours = CollectorRegistry()
    theirs = CollectorRegistry()
    metrics = RequestMetrics(ours)
    counter = Counter("gateway_requests", "", ["method", "route", "status"], registry=theirs)
    histogram = Histogram(
        "gateway_request_duration_seconds",
        "",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=theirs,
    )
    observations = [
        ("POST", "/v1/sources", 201, 0.0004),
        ("POST", "/v1/sources", 201, 0.005),  # on a bound: counted in that bucket ("le")
        ("POST", "/v1/sources", 401, 0.02),
        ("GET", "/v1/sources/{id}", 206, 7.5),
        ("GET", "/v1/sources/{id}", 200, 1000.0),  # above every bound: +Inf only
    ]
    for method, route, status, seconds in observations:
        metrics.observe(method, route, status, seconds)
        counter.labels(method, route, str(status)).inc()
        histogram.labels(method, route).observe(seconds)

    def samples(registry: CollectorRegistry) -> set[tuple[str, frozenset[tuple[str, str]], float]]:
        return {
            # When a series began: the two differ by the moments they were first observed.
            (s.name, frozenset(s.labels.items()), 0.0 if s.name.endswith("_created") else s.value)
            for family in registry.collect()
            for s in family.samples
        }

    assert samples(ours) == samples(theirs)
    # Per series: the count and its creation; per histogram: +Inf, _count, _sum and _created.
    assert len(samples(ours)) == 2 * 4 + 2 * (len(LATENCY_BUCKETS) + 4)
    assert {(f.name, f.type) for f in ours.collect()} == {
        (f.name, f.type) for f in theirs.collect()
    }
    created = [s.value for f in ours.collect() for s in f.samples if s.name.endswith("_created")]
    assert len(created) == 6 and all(abs(c - time.time()) < 60 for c in created)
