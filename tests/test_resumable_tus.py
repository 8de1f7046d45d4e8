"""tus 1.0.0 on the source URLs, spoken in raw HTTP: creation, offsets, appends, checksums,
termination, discovery, and what completion gives (SPEC "Resumable uploads")."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from typing import Any

import aiohttp

from .helpers import SMALL_PART, Gateway, StartGateway, stored

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"


async def create(
    http: aiohttp.ClientSession, upload_url: str, length: int | None, **headers: str
) -> aiohttp.ClientResponse:
    sent = {**TUS, **headers}
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    async with http.post(upload_url, headers=sent) as resp:
        await resp.read()
        return resp


async def patch(
    http: aiohttp.ClientSession, url: str, offset: int, data: bytes, **headers: str
) -> aiohttp.ClientResponse:
    sent = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE, **headers}
    async with http.patch(url, data=io.BytesIO(data), headers=sent) as resp:
        await resp.read()
        return resp


async def head(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    async with http.head(url, headers=TUS) as resp:
        return resp


async def new_upload(
    gateway: Gateway, http: aiohttp.ClientSession, length: int | None
) -> tuple[dict[str, Any], str]:
    source = await gateway.create_source(http)
    resp = await create(http, source["upload_url"], length)
    assert resp.status == 201, resp
    return source, resp.headers["Location"]


async def test_upload_in_three_patches_is_stored_whole(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway()
    data = os.urandom(3 * SMALL_PART + 1234)
    source, url = await new_upload(gateway, http, len(data))
    assert url.startswith(f"{gateway.url}/v1/sources/{source['id']}/uploads/")
    assert "?token=" in url
    cuts = [0, 1000, SMALL_PART * 2 + 7, len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        resp = await patch(http, url, start, data[start:end])
        assert resp.status == 204, resp
        assert resp.headers["Upload-Offset"] == str(end)
        assert resp.headers["Tus-Resumable"] == "1.0.0"
        if end < len(data):
            assert stored(s3, gateway, source) is None  # nothing visible before the end
    assert stored(s3, gateway, source) == data
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()


async def test_head_reports_offset_and_length(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(5000)
    _, url = await new_upload(gateway, http, len(data))
    await patch(http, url, 0, data[:1700])
    resp = await head(http, url)
    assert resp.status == 200
    assert resp.headers["Upload-Offset"] == "1700"
    assert resp.headers["Upload-Length"] == "5000"
    assert resp.headers["Cache-Control"] == "no-store"


async def test_wrong_offset_is_409_and_keeps_offset(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(5000)
    _, url = await new_upload(gateway, http, len(data))
    await patch(http, url, 0, data[:100])
    resp = await patch(http, url, 50, data[50:200])
    assert resp.status == 409
    assert (await head(http, url)).headers["Upload-Offset"] == "100"


async def test_checksum_mismatch_is_460_and_discards_chunk(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(2 * SMALL_PART + 10)
    source, url = await new_upload(gateway, http, len(data))
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    resp = await patch(http, url, 0, data, **{"Upload-Checksum": f"sha1 {wrong}"})
    assert resp.status == 460
    assert (await head(http, url)).headers["Upload-Offset"] == "0"
    right = base64.b64encode(hashlib.sha256(data).digest()).decode()
    resp = await patch(http, url, 0, data, **{"Upload-Checksum": f"sha256 {right}"})
    assert resp.status == 204
    assert stored(s3, gateway, source) == data
