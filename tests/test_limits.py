"""Limits per identity (``auth.limits``): a request rate on the API, uploads in flight per
creator, 429 with Retry-After and the IETF RateLimit fields, CORS exposing them, the CLI waiting."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from itsdangerous import URLSafeTimedSerializer

from gateway.client.api import Api
from gateway.client.errors import CliError
from gateway.client.output import Reporter
from gateway.errors import TooManyRequests
from gateway.server.domain.limits import RateLimiter

from .helpers import LIMITED_TOKEN, SECRET, TOKEN, Gateway, StartGateway

ORIGIN = "https://console.example.com"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post_source(
    http: aiohttp.ClientSession, gateway: Gateway, token: str = TOKEN
) -> aiohttp.ClientResponse:
    async with http.post(f"{gateway.url}/v1/sources", headers=bearer(token)) as resp:
        await resp.read()
        return resp


async def test_past_the_burst_the_api_answers_429_with_the_rate_limit_fields(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    # One request every 5 seconds, 3 at once: the fourth in a row is refused.
    limits = {"requests_per_second": 0.2, "burst": 3}
    gateway = await start_gateway({"auth": {"limits": limits}})
    for _ in range(2):
        assert (await post_source(http, gateway)).status == 201
    # Deployment reads count against the same bucket.
    deployments = f"{gateway.url}/v1/apps/my-app/deployments"
    async with http.get(deployments, headers=bearer(TOKEN)) as resp:
        assert resp.status == 200
    async with http.get(deployments, headers=bearer(TOKEN)) as resp:
        assert resp.status == 429
        assert resp.headers["Content-Type"].startswith("application/json")
        body = await resp.json()
        headers = resp.headers
    assert body["code"] == "rate_limited"
    assert "0.2 per second" in body["error"]
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= 5
    assert headers["RateLimit-Policy"] == '"api";q=3;w=15'
    assert headers["RateLimit"] == f'"api";r=0;t={wait}'
    resp = await post_source(http, gateway)
    assert resp.status == 429
    # Nothing happened: no source was created, and deployments are refused the same way.
    async with http.post(deployments, json={}, headers=bearer(TOKEN)) as resp:
        assert resp.status == 429
    # Each identity has its own bucket; a request without a valid token is 401, not counted.
    assert (await post_source(http, gateway, LIMITED_TOKEN)).status == 201
    assert (await post_source(http, gateway, "not-a-token-at-all")).status == 401


async def test_without_limits_nothing_is_refused(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(post_source(http, gateway) for _ in range(30)))
    assert {resp.status for resp in results} == {201}
    assert all("RateLimit" not in resp.headers for resp in results)


def test_the_bucket_refills_at_the_rate_and_holds_the_burst() -> None:
    now = [1000.0]
    limiter = RateLimiter(2.0, 4, clock=lambda: now[0])
    for _ in range(4):
        limiter.take("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a")
    assert refused.value.retry_after == 1
    limiter.take("b")  # another identity
    now[0] += 0.5  # one request's worth
    limiter.take("a")
    with pytest.raises(TooManyRequests):
        limiter.take("a")
    now[0] += 3600  # a long quiet time fills the bucket to the burst, no more
    for _ in range(4):
        limiter.take("a")
    with pytest.raises(TooManyRequests):
        limiter.take("a")


class HeldBody:
    """An upload body that sends one chunk, then waits until released."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield b"x" * 1000
        self.started.set()
        await self.release.wait()
        yield b"y" * 1000


async def put(http: aiohttp.ClientSession, url: str, data: Any) -> tuple[int, Any]:
    async with http.put(url, data=data) as resp:
        return resp.status, resp


async def test_uploads_in_flight_are_counted_against_the_sources_creator(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"auth": {"limits": {"concurrent_uploads": 1}}})
    first, second = [await gateway.create_source(http) for _ in range(2)]
    async with http.post(f"{gateway.url}/v1/sources", headers=bearer(LIMITED_TOKEN)) as resp:
        others = await resp.json()
    held = HeldBody()
    upload = asyncio.create_task(put(http, first["upload_url"], held.chunks()))
    try:
        await asyncio.wait_for(held.started.wait(), 10)
        async with http.put(second["upload_url"], data=io.BytesIO(b"z" * 100)) as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "5"
            assert resp.headers["RateLimit-Policy"] == '"uploads";q=1;qu="concurrent-requests"'
            assert resp.headers["RateLimit"] == '"uploads";r=0;t=5'
            assert (await resp.json())["code"] == "rate_limited"
        # Another creator's source is not held back.
        async with http.put(others["upload_url"], data=io.BytesIO(b"z" * 100)) as resp:
            assert resp.status == 200
        # A URL signed before creators were signed in is not counted.
        sid = str(uuid.uuid4())
        old = URLSafeTimedSerializer([SECRET], salt="sources-gateway.upload").dumps({"id": sid})
        old_url = f"{gateway.url}/v1/sources/{sid}?token={old}"
        async with http.put(old_url, data=io.BytesIO(b"z" * 100)) as resp:
            assert resp.status == 200
    finally:
        held.release.set()
        status, _ = await asyncio.wait_for(upload, 10)
    assert status == 200
    # The slot is free again.
    async with http.put(second["upload_url"], data=io.BytesIO(b"z" * 100)) as resp:
        assert resp.status == 200


async def test_a_refused_upload_slot_is_given_back_when_the_upload_fails(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {"auth": {"limits": {"concurrent_uploads": 1}}, "sources": {"max_size_bytes": 1000}}
    )
    source = await gateway.create_source(http)
    for _ in range(3):
        async with http.put(source["upload_url"], data=io.BytesIO(b"z" * 5000)) as resp:
            assert resp.status == 413
    async with http.put(source["upload_url"], data=io.BytesIO(b"z" * 500)) as resp:
        assert resp.status == 200


SAFELISTED = {
    "cache-control",
    "content-language",
    "content-length",
    "content-type",
    "expires",
    "last-modified",
    "pragma",
}
# Headers about the connection or the CORS exchange itself, which no script reads.
TRANSPORT = {"date", "server", "connection", "keep-alive", "transfer-encoding", "vary"}


async def test_cors_exposes_every_header_responses_carry(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(
        {
            "cors": {"allowed_origins": [ORIGIN]},
            "auth": {"limits": {"requests_per_second": 0.1, "burst": 2}},
            "sources": {"max_size_bytes": 1000},
        }
    )
    origin = {"Origin": ORIGIN}
    seen: list[aiohttp.ClientResponse] = []

    async def record(method: str, url: str, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = {**origin, **kwargs.pop("headers", {})}
        async with http.request(method, url, headers=headers, **kwargs) as resp:
            await resp.read()
            seen.append(resp)
            return resp

    created = await record("POST", f"{gateway.url}/v1/sources", headers=bearer(TOKEN))
    source = await created.json()
    await record("PUT", source["upload_url"], data=io.BytesIO(b"a" * 100))
    await record("GET", source["download_url"])
    await record("GET", source["download_url"], headers={"Range": "bytes=0-9"})
    await record("GET", source["download_url"], headers={"Range": "bytes=500-"})
    await record("HEAD", source["download_url"])
    await record("PUT", source["upload_url"], data=io.BytesIO(b"a" * 5000))
    await record("POST", f"{gateway.url}/v1/sources", headers=bearer("wrong-token-0"))
    await record("POST", f"{gateway.url}/v1/sources", headers=bearer(TOKEN))
    limited = await record("POST", f"{gateway.url}/v1/sources", headers=bearer(TOKEN))
    assert limited.status == 429
    assert {resp.status for resp in seen} >= {200, 201, 206, 401, 413, 416, 429}

    for resp in seen:
        exposed = {
            h.strip().lower() for h in resp.headers["Access-Control-Expose-Headers"].split(",")
        }
        carried = {name.lower() for name in resp.headers}
        hidden = {
            name
            for name in carried - SAFELISTED - TRANSPORT - exposed
            if not name.startswith("access-control-")
        }
        assert not hidden, (resp.status, resp.method, hidden)


async def test_the_cli_waits_out_a_429_and_tries_again(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"auth": {"limits": {"requests_per_second": 1, "burst": 1}}})
    api = Api(http, gateway.url, TOKEN, Reporter(quiet=True))
    started = time.monotonic()
    for _ in range(3):
        assert "upload_url" in await api.create_source()
    # Three creations a second apart: the CLI waited (Retry-After: 1) rather than failing.
    assert time.monotonic() - started >= 1.5


async def test_the_cli_gives_up_on_a_long_wait(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    # One request every 100 s: Retry-After is longer than the CLI will wait.
    limits = {"requests_per_second": 0.01, "burst": 1}
    gateway = await start_gateway({"auth": {"limits": limits}})
    api = Api(http, gateway.url, TOKEN, Reporter(quiet=True))
    await api.create_source()
    started = time.monotonic()
    with pytest.raises(CliError) as failed:
        await api.create_source()
    assert time.monotonic() - started < 5
    assert "too many requests" in str(failed.value)
