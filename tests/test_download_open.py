"""A plain GET of a download (no Range, If-Range or If-None-Match) asks S3 for the object at once
(``DescribedReads``): GetObject beside GetObjectTagging, no HeadObject (GetObject's answer
describes the object as HeadObject's does, and the tags are judged against that version, held
objects included: ``tests/test_resumable_direct.py``, ``tests/test_download.py``). Downloads with
those headers look the object up first."""

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


async def test_a_plain_download_needs_no_head_object(
    start_gateway: StartGateway, http: aiohttp.ClientSession, proxy: FaultProxy
) -> None:
    """HeadObject hangs: a plain GET is served all the same, with its description."""
    storage = {"endpoint_url": proxy.url, "max_attempts": 1, "read_timeout": 1.5}
    gateway = await start_gateway({"storage": storage})
    data = os.urandom(100_000)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault("stall", method="HEAD", path=source["id"], times=9))
    async with asyncio.timeout(HANG_GUARD_SECONDS), http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["ETag"].strip('"')
        assert resp.headers["Content-Type"] == "application/gzip"
        assert "X-Checksum-Sha256" in resp.headers
    assert object_gets(proxy, source["id"]) == ["forward"]
    assert proxy.count("HEAD", source["id"]) == 0


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
