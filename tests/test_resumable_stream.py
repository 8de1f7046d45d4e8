"""Parts sent to the store while their bytes arrive (``gateway.server.domain.resumable_stream``):
a request whose ``Content-Length`` says it fills a part streams that part to S3 as it comes, as a
plain upload streams into one PUT; a store failure sends the part again from the buffer; a request
cut midway keeps what it sent as the tail, and the upload goes on from there."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .faultproxy import Fault, FaultProxy, fault_proxy
from .helpers import SMALL_PART, StartGateway, stored
from .test_metrics import scrape, value
from .test_resumable_instances import TUS, new_upload, offset, patch, upload_state

OFFSET_TYPE = "application/offset+octet-stream"
PIECE = 16 * 1024


async def held_at(data: bytes, at: int, gate: asyncio.Event) -> AsyncIterator[bytes]:
    for start in range(0, len(data), PIECE):
        if start == at:
            await gate.wait()
        yield data[start : start + PIECE]


def part_started(proxy: FaultProxy) -> bool:
    return any(m == "PUT" and "partNumber=" in target for m, target in proxy.started)


def sized(at: int, length: int) -> dict[str, str]:
    # With a Content-Length, aiohttp sends the generator's bytes as they are, not chunked.
    headers = {**TUS, "Upload-Offset": str(at), "Content-Type": OFFSET_TYPE}
    return {**headers, "Content-Length": str(length)}


async def test_a_part_goes_out_while_its_bytes_arrive(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with fault_proxy(moto_endpoint) as proxy:
        gateway = await start_gateway({"storage": {"endpoint_url": proxy.url}})
        data = os.urandom(3 * SMALL_PART)
        source, url = await new_upload(gateway, http, len(data))
        gate = asyncio.Event()
        body = held_at(data, 3 * SMALL_PART // 4, gate)  # three quarters of the first part
        sending = asyncio.ensure_future(http.patch(url, data=body, headers=sized(0, len(data))))
        try:
            for _ in range(250):
                if part_started(proxy):
                    break
                await asyncio.sleep(0.02)
            assert part_started(proxy)  # before the part's last bytes were even sent
        finally:
            gate.set()
            async with await sending as resp:
                assert resp.status == 204
        assert stored(s3, gateway, source) == data


async def test_a_streamed_part_the_store_failed_is_sent_again(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with fault_proxy(moto_endpoint) as proxy:
        proxy.add(Fault("500", method="PUT", query="partNumber="))
        gateway = await start_gateway({"storage": {"endpoint_url": proxy.url}})
        data = os.urandom(2 * SMALL_PART + 100)
        source, url = await new_upload(gateway, http, len(data))
        assert (await patch(http, url, 0, data)).status == 204
        numbers = proxy.part_numbers()
        assert numbers.count(numbers[0]) == 2  # failed while streaming, sent again whole
        assert stored(s3, gateway, source) == data


class ClientCut(Exception):
    """The client's network dropped mid-body."""


async def cut_at(data: bytes, at: int, received: Any) -> AsyncIterator[bytes]:
    for start in range(0, at, PIECE):
        yield data[start : min(start + PIECE, at)]
    for _ in range(250):
        if await received():
            break
        await asyncio.sleep(0.02)
    raise ClientCut


async def test_a_cut_mid_part_keeps_the_streamed_bytes_as_the_tail(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway({"server": {"min_upload_rate": 0}})
    data = os.urandom(3 * SMALL_PART)
    source, url = await new_upload(gateway, http, len(data))
    at = SMALL_PART + SMALL_PART // 2  # half-way through the second part, which was streaming

    async def all_received() -> bool:
        return value(await scrape(gateway, http), "gateway_upload_bytes_total") >= at

    try:
        async with http.patch(
            url, data=cut_at(data, at, all_received), headers=sized(0, len(data))
        ):
            pass
    except aiohttp.ClientError:
        pass
    for _ in range(250):  # read in the bucket: a HEAD now would end the cut request's work
        if upload_state(s3, gateway, url).get("offset") == at:
            break
        await asyncio.sleep(0.02)
    assert await offset(http, url) == at  # the first part, and the second's half as the tail
    assert (await patch(http, url, at, data[at:])).status == 204
    assert stored(s3, gateway, source) == data
