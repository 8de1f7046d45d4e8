"""A plain GET of a download (no Range, If-Range or If-None-Match) asks S3 for the object while it
looks it up (``DescribedReads``): GetObject goes out beside HeadObject and GetObjectTagging, not
after them, and the body must be of the version described (compared by ETag) or the answer is
503. Downloads with those headers look the object up first (``tests/test_download.py``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from .faultproxy import Fault, FaultProxy, fault_proxy
from .helpers import StartGateway

HANG_GUARD_SECONDS = 60


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(moto_endpoint) as p:
        yield p


def object_gets(proxy: FaultProxy, source_id: str) -> list[str]:
    """What happened to each GetObject of ``source_id`` (not its tagging)."""
    return [
        action
        for method, target, action in proxy.requests
        if method == "GET" and source_id in target and "tagging" not in target
    ]


async def test_the_body_is_asked_for_while_the_object_is_looked_up(
    start_gateway: StartGateway, http: aiohttp.ClientSession, proxy: FaultProxy
) -> None:
    """HeadObject hangs: GetObject went out all the same (and the download is a JSON 503 once
    the read timeout gave HeadObject up)."""
    storage = {"endpoint_url": proxy.url, "max_attempts": 1, "read_timeout": 1.5}
    gateway = await start_gateway({"storage": storage})
    data = os.urandom(100_000)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault("stall", method="HEAD", path=source["id"], times=9))
    async with asyncio.timeout(HANG_GUARD_SECONDS), http.get(source["download_url"]) as resp:
        assert resp.status == 503
        assert set(await resp.json()) == {"error"}
    assert object_gets(proxy, source["id"]) == ["forward"]


async def test_a_ranged_download_looks_the_object_up_first(
    start_gateway: StartGateway, http: aiohttp.ClientSession, proxy: FaultProxy
) -> None:
    storage = {"endpoint_url": proxy.url, "max_attempts": 1, "read_timeout": 1.5}
    gateway = await start_gateway({"storage": storage})
    source = await gateway.uploaded_source(http, os.urandom(100_000))
    proxy.add(Fault("stall", method="HEAD", path=source["id"], times=9))
    headers = {"Range": "bytes=0-9"}
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        async with http.get(source["download_url"], headers=headers) as resp:
            assert resp.status == 503
    assert object_gets(proxy, source["id"]) == []


async def test_a_body_of_another_version_is_a_503(
    start_gateway: StartGateway, http: aiohttp.ClientSession, proxy: FaultProxy
) -> None:
    """GetObject answering another ETag than HeadObject's (a re-upload in between): the headers
    would describe one version and the body be another, so neither is sent."""
    gateway = await start_gateway({"storage": {"endpoint_url": proxy.url, "max_attempts": 1}})
    source = await gateway.uploaded_source(http, os.urandom(100_000))
    fault = Fault("empty_etag", method="GET", path=source["id"], exclude_query="tagging")
    proxy.add(fault)
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 503
        assert "replaced while it was being read" in (await resp.json())["error"]
        assert resp.headers["Retry-After"] == "1"
    assert object_gets(proxy, source["id"]) == ["empty_etag"]
    async with http.get(source["download_url"]) as resp:  # the next one is served
        assert resp.status == 200
        assert len(await resp.read()) == 100_000
