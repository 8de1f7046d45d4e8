"""Liveness and readiness probes, against real gateways on the moto server."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import MOTO_CREDENTIALS, Gateway, StartGateway
from .ports import free_port


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
        body = await resp.json()
    assert body["status"] == "ready"
    for name in ("storage", "deployer"):
        check = body["checks"][name]
        assert check["status"] == "ok"
        assert check["required"] is (name == "storage")
        assert 0 <= check["age_seconds"] < 60


async def ready_within(
    gateway: Gateway, http: aiohttp.ClientSession, status: int, seconds: float = 10
) -> dict[str, Any]:
    """Poll /readyz until it answers ``status`` (the background checks catch up): its body."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        async with http.get(f"{gateway.url}/readyz") as resp:
            body: dict[str, Any] = await resp.json()
            if resp.status == status:
                return body
        assert loop.time() < deadline, body
        await asyncio.sleep(0.1)


async def test_readyz_without_the_bucket_is_503_until_it_exists(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    gateway = await start_gateway(
        {"storage": {"bucket": missing}, "server": {"readiness_interval": 0.2}}
    )
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["Retry-After"]
        body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["error"] == "storage: the bucket does not exist"
    assert body["checks"]["storage"]["status"] == "unavailable"
    assert missing not in str(body)  # probes are unauthenticated: no names given away

    s3.create_bucket(Bucket=missing)
    try:
        body = await ready_within(gateway, http, 200)
        assert body["checks"]["storage"]["status"] == "ok"
    finally:
        s3.delete_bucket(Bucket=missing)


async def test_probes_never_wait_for_a_dead_endpoint_nor_reach_it(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = await start_gateway({"storage": {"endpoint_url": dead, "connect_timeout": 1}})

    async def probe() -> tuple[int, dict[str, Any], float]:
        started = time.monotonic()
        async with http.get(f"{gateway.url}/readyz") as resp:
            return resp.status, await resp.json(), time.monotonic() - started

    results = await asyncio.gather(*(probe() for _ in range(30)))
    assert {status for status, _, _ in results} == {503}
    assert all("unreachable" in body["error"] for _, body, _ in results)
    assert max(took for _, _, took in results) < 1
    # Thirty concurrent probes, no S3 call of their own: the start-up check's only.
    assert await s3_errors(gateway, http, "HeadBucket") == 1


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers (a hanging dependency): its URL."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("hanging", ["storage", "deployer"])
async def test_readyz_answers_at_once_while_a_dependency_hangs(
    start_gateway: StartGateway, http: aiohttp.ClientSession, hanging: str
) -> None:
    async with silent_server() as url:
        if hanging == "storage":
            overrides: dict[str, Any] = {"storage": {"endpoint_url": url, "read_timeout": 60}}
        else:
            forward = {"type": "sqs", "queue": "deployments", "endpoint_url": url}
            overrides = {"deployments": {"forward": forward}}
        gateway = await start_gateway(overrides)
        started = time.monotonic()
        async with http.get(f"{gateway.url}/readyz") as resp:
            body = await resp.json()
            assert time.monotonic() - started < 1
        assert body["checks"][hanging]["status"] == "unknown"
        # The bucket gates readiness; a hanging deployer is only reported.
        assert resp.status == (503 if hanging == "storage" else 200), body


async def test_readyz_fails_once_shutdown_begins(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200
    # What run_app does on SIGTERM before it waits for in-flight requests.
    await gateway.app.shutdown()
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["status"] == "unavailable"
    assert body["error"] == "shutting down"
    async with http.get(f"{gateway.url}/healthz") as resp:
        assert resp.status == 200


async def dependency_up(gateway: Gateway, http: aiohttp.ClientSession, name: str) -> float:
    async with http.get(f"{gateway.url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_dependency_up" and sample.labels == {"dependency": name}:
                return sample.value
    raise AssertionError("no gateway_dependency_up sample for " + name)


@pytest.mark.parametrize("by_url", [False, True])
async def test_a_missing_deployment_queue_is_reported_and_refuses_deployments(
    start_gateway: StartGateway, http: aiohttp.ClientSession, moto_endpoint: str, by_url: bool
) -> None:
    sqs = boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )
    name = f"deploy-{uuid.uuid4().hex[:12]}"
    queue = f"{moto_endpoint}/123456789012/{name}" if by_url else name
    forward = {"type": "sqs", "queue": queue, "endpoint_url": moto_endpoint, "retries": 0}
    gateway = await start_gateway(
        {"deployments": {"forward": forward}, "server": {"readiness_interval": 0.2}}
    )
    # Still ready: every instance shares the queue, and uploads do not need it.
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 200
        body = await resp.json()
    deployer = body["checks"]["deployer"]
    assert deployer["status"] == "unavailable"
    assert deployer["error"] == "the deployment queue does not exist"
    assert name not in str(body)
    assert await dependency_up(gateway, http, "deployer") == 0
    assert await dependency_up(gateway, http, "storage") == 1

    source = await gateway.uploaded_source(http, gzip.compress(b"an archive"))
    payload = {"deployment": {"git_ref": "v1", "download_url": source["download_url"]}}
    deployments = f"{gateway.url}/v1/apps/my-app/deployments"
    started = time.monotonic()
    async with http.post(deployments, json=payload, headers=gateway.auth) as resp:
        assert resp.status == 503, await resp.text()
        assert resp.headers["Retry-After"]
        error = (await resp.json())["error"]
    assert time.monotonic() - started < 1
    assert "deployer is unavailable" in error and "does not exist" in error
    async with http.get(deployments, headers=gateway.auth) as resp:
        assert (await resp.json())["deployments"] == []  # nothing recorded

    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        body = await ready_within(gateway, http, 200)
        for _ in range(100):
            if await dependency_up(gateway, http, "deployer") == 1:
                break
            await asyncio.sleep(0.1)
        async with http.post(deployments, json=payload, headers=gateway.auth) as resp:
            assert resp.status == 201, await resp.text()
    finally:
        sqs.delete_queue(QueueUrl=url)


async def test_readiness_can_require_the_deployer(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    forward = {"type": "sqs", "queue": f"missing-{uuid.uuid4().hex[:12]}", "retries": 0}
    gateway = await start_gateway(
        {
            "deployments": {"forward": forward},
            "server": {"readiness_requires": ["storage", "deployer"]},
        }
    )
    async with http.get(f"{gateway.url}/readyz") as resp:
        assert resp.status == 503
        body = await resp.json()
    assert body["error"] == "deployer: the deployment queue does not exist"
    assert body["checks"]["deployer"]["required"] is True
    assert body["checks"]["storage"]["status"] == "ok"
