"""Resumable uploads with real ``gateway serve`` processes (S3's 5 MiB part minimum): an instance
killed with SIGKILL in the middle of a PATCH loses nothing it acknowledged, and the client
resumes on another instance."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from .helpers import ServeGateway, create_source

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_TYPE = "application/offset+octet-stream"
PART = 5 * 1024 * 1024  # serve_gateway's part size


def state_of(s3: Any, bucket: str, url: str) -> dict[str, Any]:
    """The upload's state object as the bucket holds it (empty before it exists)."""
    source_id, _, upload_id = url.split("?")[0].split("/v1/sources/")[1].partition("/uploads/")
    try:
        obj = s3.get_object(Bucket=bucket, Key=f"uploads/{source_id}/{upload_id}/state")
    except s3.exceptions.NoSuchKey:
        return {}
    state: dict[str, Any] = json.loads(obj["Body"].read())
    return state


async def patch(
    http: aiohttp.ClientSession, url: str, at: int, data: Any
) -> aiohttp.ClientResponse:
    headers = {**TUS, "Upload-Offset": str(at), "Content-Type": OFFSET_TYPE}
    async with http.patch(url, data=data, headers=headers) as resp:
        await resp.read()
        return resp


async def test_instance_killed_mid_patch_resumes_on_another(
    serve_gateway: ServeGateway, http: aiohttp.ClientSession, s3: Any, bucket: str
) -> None:
    larger = {"sources": {"max_size_bytes": 32 * 1024 * 1024}}
    a, b = serve_gateway(larger, name="a"), serve_gateway(larger, name="b")
    data = os.urandom(3 * PART + 12345)
    source = await create_source(http, a.url)
    headers = {**TUS, "Upload-Length": str(len(data))}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        url = resp.headers["Location"]
    path = url[url.index("/v1/") :]
    gate = asyncio.Event()
    first = PART + 4096

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, first, 64 * 1024):
            yield data[start : min(start + 64 * 1024, first)]
        await gate.wait()
        yield data[first:]

    patching = asyncio.ensure_future(patch(http, a.url + path, 0, body()))
    for _ in range(400):
        if (await asyncio.to_thread(state_of, s3, bucket, url)).get("offset") == PART:
            break
        await asyncio.sleep(0.05)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    gate.set()
    with pytest.raises(aiohttp.ClientError):
        await patching
    async with http.head(b.url + path, headers=TUS) as resp:
        assert resp.status == 200
        at = int(resp.headers["Upload-Offset"])
    assert at == PART  # what A committed; the bytes after it were never acknowledged
    resp = await patch(http, b.url + path, at, io.BytesIO(data[at:]))
    assert resp.status == 204
    download = b.url + source["download_url"][len(a.url) :]
    async with http.get(download) as got:
        assert got.status == 200
        assert await got.read() == data
