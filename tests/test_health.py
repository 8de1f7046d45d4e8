"""Liveness and readiness probes, against real gateways on the moto server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp.test_utils import unused_port
from prometheus_client.parser import text_string_to_metric_families

from gateway.server.http.probes import READINESS_CACHE_SECONDS

from .helpers import MOTO_CREDENTIALS, Gateway, StartGateway


async def s3_errors(gateway: Gateway, http: aiohttp.ClientSession, operation: str) -> float:
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_s3_errors_total" and sample.labels == {
                "operation": operation
            }:
                return sample.value
    return 0.0


async def test_healthz(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
        assert resp.headers["X-Request-ID"]
    async with http.head(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200


async def test_readyz_when_the_bucket_answers(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"status": "ready"}


async def test_readyz_without_the_bucket_is_503_until_it_exists(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    gateway = await start_gateway({"storage": {"bucket": missing}})
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["Retry-After"]
        body = await resp.json()
    assert body["status"] == "unavailable"
    assert "bucket" in body["error"]
    assert missing not in body["error"]  # probes are unauthenticated: no names given away

    s3.create_bucket(Bucket=missing)
    try:
        # Still the cached answer: a probe storm does not reach S3.
        async with http.get(f"{gateway.url}/readyz") as resp:
            assert resp.status == 503
        gateway.clock.advance(READINESS_CACHE_SECONDS + 0.5)
        async with http.get(f"{gateway.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        s3.delete_bucket(Bucket=missing)


async def test_readyz_on_a_dead_endpoint_checks_once_per_period(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    gateway = await start_gateway({"storage": {"endpoint_url": dead, "connect_timeout": 1}})

    async def probe() -> tuple[int, dict[str, Any]]:
        async with http.get(f"{gateway.url}/readyz") as resp:
            return resp.status, await resp.json()

    results = await asyncio.gather(*(probe() for _ in range(30)))
    assert {status for status, _ in results} == {503}
    assert all("unreachable" in body["error"] for _, body in results)
    # Thirty concurrent probes, one HeadBucket (every failed S3 call is counted).
    assert await s3_errors(gateway, http, "HeadBucket") == 1

    gateway.clock.advance(READINESS_CACHE_SECONDS + 0.5)
    status, _ = await probe()
    assert status == 503
    assert await s3_errors(gateway, http, "HeadBucket") == 2


async def test_readyz_fails_once_shutdown_begins(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200
    # What run_app does on SIGTERM before it waits for in-flight requests.
    await gateway.app.shutdown()
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        assert await resp.json() == {"status": "unavailable", "error": "shutting down"}
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("by_url", [False, True])
async def test_readyz_checks_the_deployment_queue(
    start_gateway: StartGateway, http: aiohttp.ClientSession, moto_endpoint: str, by_url: bool
) -> None:
    sqs = boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )
    name = f"deploy-{uuid.uuid4().hex[:12]}"
    queue = f"{moto_endpoint}/123456789012/{name}" if by_url else name
    forward = {"type": "sqs", "queue": queue, "endpoint_url": moto_endpoint, "retries": 0}
    gateway = await start_gateway({"deployments": {"forward": forward}})
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["error"] == "deployment queue: the deployment queue does not exist"
    assert name not in body["error"]

    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        gateway.clock.advance(READINESS_CACHE_SECONDS + 0.5)
        async with http.get(f"{gateway.url}/readyz") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        sqs.delete_queue(QueueUrl=url)
