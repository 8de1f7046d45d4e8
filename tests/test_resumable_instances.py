"""Resumable uploads across instances: two gateways on one bucket, no shared memory. A cut PATCH
on A resumes on B; a DELETE on B stops A; racing writers through A and B never corrupt the
upload; a store that ignores conditional writes gets 501 for resumable requests only."""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import moto.s3.responses
import pytest

from .faultproxy import Fault, fault_proxy
from .helpers import SMALL_PART, Gateway, StartGateway, open_uploads, stored

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


class ClientCut(Exception):
    """The client's network dropped (the request body raises, aiohttp closes the connection)."""


async def cut_after(data: bytes, size: int, ready: Any) -> AsyncIterator[bytes]:
    """``data[:size]``, then the connection drops once ``ready()`` (the server has read it)."""
    for start in range(0, size, 16 * 1024):
        yield data[start : min(start + 16 * 1024, size)]
    for _ in range(200):
        # Asked from a thread: the gateway serves on this event loop meanwhile.
        if await asyncio.to_thread(ready):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the bytes past the last part reach the server's buffer too
    raise ClientCut


async def new_upload(gateway: Gateway, http: aiohttp.ClientSession, length: int) -> tuple[Any, str]:
    source = await gateway.create_source(http)
    headers = {**TUS, "Upload-Length": str(length)}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        return source, resp.headers["Location"]


def upload_state(s3: Any, gateway: Gateway, url: str) -> dict[str, Any]:
    """The upload's state object as the bucket holds it (empty before it exists)."""
    source_id, _, upload_id = url.split("?")[0].split("/v1/sources/")[1].partition("/uploads/")
    key = f"{gateway.config.sources.resumable.prefix}{source_id}/{upload_id}/state"
    try:
        body = s3.get_object(Bucket=gateway.config.storage.bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return {}
    state: dict[str, Any] = json.loads(body)
    return state


def on(gateway: Gateway, url: str) -> str:
    """The same upload URL, sent to ``gateway`` (what a load balancer does)."""
    return gateway.url + url[url.index("/v1/") :]


async def offset(http: aiohttp.ClientSession, url: str) -> int:
    async with http.head(url, headers=TUS) as resp:
        assert resp.status == 200, resp.status
        return int(resp.headers["Upload-Offset"])


async def patch(
    http: aiohttp.ClientSession, url: str, at: int, data: Any
) -> aiohttp.ClientResponse:
    headers = {**TUS, "Upload-Offset": str(at), "Content-Type": OFFSET_TYPE}
    async with http.patch(url, data=data, headers=headers) as resp:
        await resp.read()
        return resp


async def test_patch_cut_on_a_resumes_on_b(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(), await start_gateway()
    data = os.urandom(4 * SMALL_PART + 4321)
    source, url = await new_upload(a, http, len(data))
    cut = 2 * SMALL_PART + 1000

    def parts_committed() -> bool:
        return bool(upload_state(s3, a, url).get("offset") == 2 * SMALL_PART)

    with pytest.raises(aiohttp.ClientError):
        await patch(http, on(a, url), 0, cut_after(data, cut, parts_committed))
    # A notices the cut and commits what arrived, the tail short of a part included (seen in
    # the bucket: a HEAD is a newer request, which would end A's request before it commits).
    for _ in range(200):
        if (await asyncio.to_thread(upload_state, s3, a, url)).get("offset") == cut:
            break
        await asyncio.sleep(0.05)
    at = await offset(http, on(b, url))
    assert at == cut
    resp = await patch(http, on(b, url), at, io.BytesIO(data[at:]))
    assert resp.status == 204
    assert stored(s3, a, source) == data


async def test_delete_on_b_stops_a(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(), await start_gateway()
    data = os.urandom(4 * SMALL_PART)
    source, url = await new_upload(a, http, len(data))
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield data[: SMALL_PART + 10]
        await gate.wait()
        yield data[SMALL_PART + 10 :]

    writing = asyncio.ensure_future(patch(http, on(a, url), 0, slow()))
    await asyncio.sleep(0.5)
    async with http.delete(on(b, url), headers=TUS) as resp:
        assert resp.status == 204
    gate.set()
    resp = await writing
    assert resp.status in (404, 409)  # stopped: superseded, or its upload gone
    async with http.head(on(a, url), headers=TUS) as head:
        assert head.status == 404
    assert stored(s3, a, source) is None
    assert open_uploads(s3, a) == []


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_racing_writers_on_a_and_b(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(), await start_gateway()
    data = os.urandom(6 * SMALL_PART + 17)
    source, url = await new_upload(a, http, len(data))

    async def writer(gateway: Gateway) -> list[int]:
        statuses = []
        for _ in range(40):
            async with http.head(on(gateway, url), headers=TUS) as resp:
                if resp.status != 200:
                    statuses.append(resp.status)
                    break
                at = int(resp.headers["Upload-Offset"])
            if at == len(data):
                break
            end = min(len(data), at + SMALL_PART + 5000)
            statuses.append(
                (await patch(http, on(gateway, url), at, io.BytesIO(data[at:end]))).status
            )
        return statuses

    results = await asyncio.gather(writer(a), writer(b), writer(a), writer(b))
    assert all(s in (204, 409) for r in results for s in r), results
    # The newest request wins: four writers ending each other's requests may leave the upload
    # short (on a loaded machine every request can be superseded before it commits its first
    # part). What was committed is the upload's: one writer alone finishes it.
    assert all(s in (204, 409) for s in await writer(a))
    assert stored(s3, a, source) == data  # byte-exact, whoever won each round


@pytest.mark.usefixtures("atomic_conditional_writes")
async def test_writer_superseded_while_reading_the_tail_back_gets_409(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PATCH starts by reading the upload's tail back; a newer PATCH on B that takes the upload
    over meanwhile replaces that tail and removes it. The older one is superseded (409), not told
    that the upload is gone (404, after which a tus client starts over): what a loaded machine
    made of test_racing_writers_on_a_and_b now and then, here made to happen every time."""
    a, b = await start_gateway(), await start_gateway()
    data = os.urandom(4 * SMALL_PART + 17)
    source, url = await new_upload(a, http, len(data))
    first, second = SMALL_PART + 5000, 2 * SMALL_PART + 10_000  # each leaves a tail
    assert (await patch(http, on(a, url), 0, io.BytesIO(data[:first]))).status == 204
    reading, release = threading.Event(), threading.Event()
    original = moto.s3.responses.S3Response.get_object

    def get_object(self: Any) -> Any:  # moto runs in this process, each request on a thread
        if "/tail-" in self.parse_key_name() and not reading.is_set():
            reading.set()
            release.wait(30)  # the first read of a tail waits for the newer request's answer
        return original(self)

    monkeypatch.setattr(moto.s3.responses.S3Response, "get_object", get_object)
    older = asyncio.ensure_future(patch(http, on(a, url), first, io.BytesIO(data[first:second])))
    assert await asyncio.to_thread(reading.wait, 30)
    newer = await patch(http, on(b, url), first, io.BytesIO(data[first:second]))
    assert newer.status == 204
    release.set()
    assert (await older).status == 409
    assert await offset(http, on(a, url)) == second
    assert (await patch(http, on(a, url), second, io.BytesIO(data[second:]))).status == 204
    assert stored(s3, a, source) == data


async def test_store_without_conditional_writes_refuses_resumable_only(
    start_gateway: StartGateway, moto_endpoint: str, http: aiohttp.ClientSession, s3: Any
) -> None:
    async with fault_proxy(moto_endpoint) as proxy:
        proxy.add(Fault("ignore_conditions", times=1_000_000))
        gateway = await start_gateway({"storage": {"endpoint_url": proxy.url}})
        source = await gateway.create_source(http)
        async with http.post(source["upload_url"], headers={**TUS, "Upload-Length": "5"}) as resp:
            assert resp.status == 501
            assert "conditional writes" in (await resp.json())["error"]
        headers = {"Upload-Draft-Interop-Version": "9", "Upload-Complete": "?0"}
        async with http.post(source["upload_url"], headers=headers, data=b"abc") as resp:
            assert resp.status == 501
        async with http.put(source["upload_url"], data=b"plain") as resp:
            assert resp.status == 200
        assert stored(s3, gateway, source) == b"plain"
