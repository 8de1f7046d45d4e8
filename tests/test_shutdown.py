"""Graceful shutdown of the real process: SIGTERM lets in-flight transfers finish, then exit 0."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import ServedGateway, ServeGateway, create_source

CHUNK = 64 * 1024


async def uploads_in_flight(http: aiohttp.ClientSession, served: ServedGateway) -> float:
    async with http.get(f"{served.url}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_inflight_transfers" and sample.labels == {
                "direction": "upload"
            }:
                return sample.value
    return 0.0


async def slow_body(data: bytes, delay: float, started: asyncio.Event) -> AsyncIterator[bytes]:
    for i in range(0, len(data), CHUNK):
        yield data[i : i + CHUNK]
        started.set()
        await asyncio.sleep(delay)


async def begin_slow_upload(
    http: aiohttp.ClientSession, served: ServedGateway, data: bytes, delay: float
) -> tuple[dict[str, Any], asyncio.Task[tuple[int, str]]]:
    """Start uploading ``data`` a chunk every ``delay`` s; return once the gateway is streaming."""
    source = await create_source(http, served.url)
    started = asyncio.Event()

    async def upload() -> tuple[int, str]:
        # A separate session: the one polling /metrics must not share its connection.
        async with (
            aiohttp.ClientSession() as uploader,
            uploader.put(
                source["upload_url"],
                data=slow_body(data, delay, started),
                headers={"Content-Length": str(len(data))},
            ) as resp,
        ):
            return resp.status, await resp.text()

    task = asyncio.create_task(upload())
    await started.wait()
    deadline = time.monotonic() + 10
    while await uploads_in_flight(http, served) < 1:
        assert time.monotonic() < deadline, "the upload never reached the gateway"
        await asyncio.sleep(0.05)
    return source, task


async def test_sigterm_lets_an_upload_finish(serve_gateway: ServeGateway, s3: Any) -> None:
    served = serve_gateway({"server": {"shutdown_timeout": 30}})
    data = os.urandom(80 * CHUNK)  # 5 MiB over about 4 s
    async with aiohttp.ClientSession() as http:
        source, upload = await begin_slow_upload(http, served, data, delay=0.05)
        async with http.get(f"{served.url}/readyz") as resp:
            assert resp.status == 200  # and cached: the next check does not wait for S3
            await resp.read()
        served.terminate()
        # The kept-alive connection (the one that polled /metrics) is closed after its next
        # answer, which is 503 unless that request was already running when SIGTERM came.
        deadline = time.monotonic() + 3
        while True:
            async with http.get(f"{served.url}/readyz") as resp:
                body = await resp.read()  # a read body returns the connection to the pool
                if resp.headers.get("Connection", "").lower() == "close":
                    if resp.status != 200:
                        assert resp.status == 503
                        answer = json.loads(body)
                        assert answer["status"] == "unavailable"
                        assert answer["error"] == "shutting down"
                    break
            assert time.monotonic() < deadline, "the connection was never closed after SIGTERM"
            await asyncio.sleep(0.05)
        # Stopped accepting: a new connection is refused while the upload still runs.
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{served.url}/healthz"):
                pass
        assert not upload.done()
        status, text = await upload
    assert status == 200, text
    assert await asyncio.to_thread(served.wait, 30) == 0
    config_bucket = served.config_path.read_text().split("bucket: ")[1].split()[0]
    obj = s3.get_object(Bucket=config_bucket, Key=f"sources/{source['id']}")
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == hashlib.sha256(data).hexdigest()


async def test_shutdown_timeout_bounds_the_wait(serve_gateway: ServeGateway, s3: Any) -> None:
    served = serve_gateway({"server": {"shutdown_timeout": 1}})
    data = os.urandom(100 * CHUNK)  # would take 10 s
    async with aiohttp.ClientSession() as http:
        source, upload = await begin_slow_upload(http, served, data, delay=0.1)
        began = time.monotonic()
        served.terminate()
        assert await asyncio.to_thread(served.wait, 30) == 0
        assert time.monotonic() - began < 8
        try:
            status, _ = await asyncio.wait_for(upload, 15)
        except (aiohttp.ClientError, ConnectionError):
            status = 0
    assert status != 200
    bucket = served.config_path.read_text().split("bucket: ")[1].split()[0]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert f"sources/{source['id']}" not in keys  # cut short: nothing half-written is visible
    (put,) = [r for r in served.log_records() if r.get("method") == "PUT"]
    assert (put["status"], put["outcome"]) == (503, "cancelled")
    assert "shutdown_timeout reached" in served.log_text()
