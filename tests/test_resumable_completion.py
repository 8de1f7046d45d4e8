"""Completion of a resumable upload gives what a single PUT gives (SPEC "Resumable uploads"):
the archive check (422, nothing visible), the sha256 and archive headers on download, the
content type; and the newest request on an upload ends the older one."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from .archives import app, file, tgz
from .helpers import SMALL_PART, Gateway, StartGateway, open_uploads, stored

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"
ENFORCE = {"sources": {"archive_check": "enforce"}}


async def new_upload(gateway: Gateway, http: aiohttp.ClientSession, length: int) -> tuple[Any, str]:
    source = await gateway.create_source(http)
    headers = {**TUS, "Upload-Length": str(length)}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        return source, resp.headers["Location"]


async def patch(
    http: aiohttp.ClientSession, url: str, offset: int, data: bytes
) -> aiohttp.ClientResponse:
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_TYPE}
    async with http.patch(url, data=io.BytesIO(data), headers=headers) as resp:
        await resp.read()
        return resp


async def test_archive_in_pieces_is_checked_and_described(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(3 * SMALL_PART))])
    source, url = await new_upload(gateway, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    assert (await patch(http, url, half, data[half:])).status == 204  # read back and checked
    async with http.head(source["download_url"]) as resp:
        assert resp.status == 200
        assert resp.headers["X-Archive-Root"] == "app-1.2/"
        assert int(resp.headers["X-Archive-Entries"]) == len(app()) + 1


async def test_refused_archive_is_422_and_nothing_visible(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    earlier = tgz(app())
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=earlier) as resp:
        assert resp.status == 200
    data = tgz([file("../escape", b"x" * 100), file("pad", os.urandom(SMALL_PART * 2))])
    headers = {**TUS, "Upload-Length": str(len(data))}
    async with http.post(source["upload_url"], headers=headers) as resp:
        url = resp.headers["Location"]
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    async with http.patch(
        url,
        data=io.BytesIO(data[half:]),
        headers={**TUS, "Upload-Offset": str(half), "Content-Type": OFFSET_TYPE},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["code"] == "archive_invalid"
    assert stored(s3, gateway, source) == earlier  # the earlier complete upload intact
    async with http.head(url, headers=TUS) as resp:
        assert resp.status == 422  # the upload stays refused
    assert open_uploads(s3, gateway) == []


async def test_archive_in_one_request_is_checked_while_it_streams(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = b"not a gzip stream" * 10_000
    source, url = await new_upload(gateway, http, len(data))
    resp = await patch(http, url, 0, data)
    assert resp.status == 422
    assert stored(s3, gateway, source) is None


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


async def stalled(first: bytes, gate: asyncio.Event, rest: bytes) -> AsyncIterator[bytes]:
    yield first
    await gate.wait()
    yield rest


async def test_newer_request_ends_the_older_one(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(3 * SMALL_PART)
    source, url = await new_upload(gateway, http, len(data))
    gate = asyncio.Event()
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE}
    body = stalled(data[: SMALL_PART + 10], gate, data[SMALL_PART + 10 :])
    older = asyncio.ensure_future(http.patch(url, data=body, headers=headers))
    # The older request's first part is committed (seen in the bucket: a HEAD would be a
    # newer request); then a HEAD arrives.
    for _ in range(200):
        if upload_state(s3, gateway, url).get("offset") == SMALL_PART:
            break
        await asyncio.sleep(0.05)
    async with http.head(url, headers=TUS) as resp:
        assert resp.headers["Upload-Offset"] == str(SMALL_PART)
    gate.set()
    async with await older as resp:
        assert resp.status == 409
        assert (await resp.json())["code"] == "upload_superseded"
    async with http.head(url, headers=TUS) as resp:
        assert resp.headers["Upload-Offset"] == str(SMALL_PART)  # nothing more acknowledged
    assert (await patch(http, url, SMALL_PART, data[SMALL_PART:])).status == 204
    assert stored(s3, gateway, source) == data
