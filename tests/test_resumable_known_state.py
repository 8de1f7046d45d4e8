"""A claim on the instance that wrote (or read) an upload's state last tries the state it knows
instead of reading it again: one round trip to the store less per request. Its compare-and-swap
proves it current; when another instance changed the state meanwhile, the swap fails and the
state is read again, so what the client is told is always the bucket's (offsets, 409s, 404s)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .faultproxy import FaultProxy, fault_proxy
from .helpers import SMALL_PART, Gateway, StartGateway, stored
from .test_resumable_instances import TUS, new_upload, on, patch


def state_reads(proxy: FaultProxy) -> int:
    """GetObject requests for upload states that reached the store."""
    return sum(1 for m, target, _ in proxy.requests if m == "GET" and target.endswith("/state"))


@contextlib.asynccontextmanager
async def two_instances(
    start_gateway: StartGateway, moto_endpoint: str
) -> AsyncIterator[tuple[FaultProxy, Gateway, Gateway]]:
    """Instances A and B on one bucket, their store requests seen by one proxy."""
    async with fault_proxy(moto_endpoint) as proxy:
        config = {"storage": {"endpoint_url": proxy.url}}
        yield proxy, await start_gateway(config), await start_gateway(config)


async def test_patches_on_one_instance_read_no_state(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with fault_proxy(moto_endpoint) as proxy:
        gateway = await start_gateway({"storage": {"endpoint_url": proxy.url}})
        data = os.urandom(3 * SMALL_PART + 999)
        source, url = await new_upload(gateway, http, len(data))
        for at in (0, SMALL_PART, 2 * SMALL_PART + 10):
            end = min(len(data), at + SMALL_PART + 10) if at else SMALL_PART
            assert (await patch(http, url, at, data[at:end])).status == 204
        assert (await patch(http, url, end, data[end:])).status == 204
        # Created, claimed and committed here: every claim's swap was against the state this
        # instance wrote last, and none was read.
        assert state_reads(proxy) == 0
        assert stored(s3, gateway, source) == data


async def test_a_state_changed_on_another_instance_is_read_again(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with two_instances(start_gateway, moto_endpoint) as (proxy, a, b):
        data = os.urandom(4 * SMALL_PART + 321)
        source, url = await new_upload(a, http, len(data))
        assert (await patch(http, on(a, url), 0, data[:SMALL_PART])).status == 204
        moved = 2 * SMALL_PART + 1000
        assert (await patch(http, on(b, url), SMALL_PART, data[SMALL_PART:moved])).status == 204
        reads = state_reads(proxy)
        # A still knows the state at SMALL_PART: a client that believes it is still there is
        # told where the upload is, from the bucket, and none of its bytes is taken.
        resp = await patch(http, on(a, url), SMALL_PART, data[SMALL_PART : 2 * SMALL_PART])
        assert resp.status == 409
        assert int(resp.headers["Upload-Offset"]) == moved
        assert state_reads(proxy) > reads  # the swap against what A knew failed: read again
        # The upload goes on from the bucket's offset on A, and completes byte-exact.
        assert (await patch(http, on(a, url), moved, data[moved:])).status == 204
        assert stored(s3, a, source) == data


async def test_an_upload_cancelled_on_another_instance_is_gone_on_this_one(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with two_instances(start_gateway, moto_endpoint) as (_, a, b):
        data = os.urandom(2 * SMALL_PART)
        source, url = await new_upload(a, http, len(data))
        assert (await patch(http, on(a, url), 0, data[:SMALL_PART])).status == 204
        async with http.delete(on(b, url), headers=TUS) as resp:
            assert resp.status == 204
        resp = await patch(http, on(a, url), SMALL_PART, data[SMALL_PART:])
        assert resp.status == 404  # A knew it open; the bucket says it is gone
        async with http.head(on(a, url), headers=TUS) as head:
            assert head.status == 404
        assert stored(s3, a, source) is None
