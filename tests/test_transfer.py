"""Upload and download through the gateway, byte for byte, against the moto server."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import aiohttp
import pytest

from .helpers import SMALL_PART, Gateway, StartGateway, chunks_of


async def put(
    http: aiohttp.ClientSession, url: str, data: bytes, *, chunked: bool = False, **headers: str
) -> aiohttp.ClientResponse:
    body: Any = chunks_of(data) if chunked else data
    async with http.put(url, data=body, headers=headers) as resp:
        await resp.read()
        return resp


@pytest.mark.parametrize("size", [0, 1, 1000, SMALL_PART * 3 + 17])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_round_trip(
    gateway: Gateway, http: aiohttp.ClientSession, size: int, chunked: bool
) -> None:
    data = os.urandom(size)
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=chunks_of(data) if chunked else data) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert resp.headers["ETag"]
    assert body == {"id": source["id"], "size": size, "sha256": hashlib.sha256(data).hexdigest()}

    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
        assert resp.headers["Content-Length"] == str(size)
        assert resp.headers["Content-Type"] == "application/gzip"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        assert resp.headers["Repr-Digest"] == f"sha-256=:{digest}:"
        assert resp.headers["ETag"]
        assert resp.headers["Last-Modified"].endswith("GMT")


async def test_multipart_used_for_chunked_body(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(SMALL_PART * 2 + 5)
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=chunks_of(data)) as resp:
        assert resp.status == 200
        etag = resp.headers["ETag"]
    # A multipart object's ETag is "<md5 of part md5s>-<number of parts>".
    assert etag.strip('"').endswith("-3")
    obj = s3.get_object(Bucket=gateway.config.storage.bucket, Key=f"sources/{source['id']}")
    assert obj["Body"].read() == data


async def test_head_matches_get(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    data = os.urandom(5000)
    source = await gateway.create_source(http)
    await put(http, source["upload_url"], data)
    async with http.get(source["download_url"]) as get:
        await get.read()
    async with http.head(source["download_url"]) as head:
        assert head.status == 200
        assert await head.read() == b""
    for name in ("Content-Length", "Content-Type", "ETag", "Last-Modified", "X-Checksum-Sha256"):
        assert head.headers[name] == get.headers[name], name


async def test_download_before_upload_is_404(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 404
        assert await resp.json() == {"resource": "source", "error": "not found"}
    async with http.head(source["download_url"]) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        (None, "application/gzip"),
        ("application/octet-stream", "application/gzip"),
        # curl's -d / --data-binary default: a form's type, not the archive's (and a store that
        # parses form bodies, as moto does, would not see the bytes).
        ("application/x-www-form-urlencoded", "application/gzip"),
        ("application/x-tar", "application/x-tar"),
        ("application/gzip", "application/gzip"),
    ],
)
async def test_content_type_is_kept(
    gateway: Gateway, http: aiohttp.ClientSession, sent: str | None, stored: str
) -> None:
    source = await gateway.create_source(http)
    headers = {"Content-Type": sent} if sent else {}
    # aiohttp adds application/octet-stream to bytes bodies unless told otherwise.
    async with http.put(
        source["upload_url"], data=b"payload", headers=headers, skip_auto_headers=["Content-Type"]
    ) as resp:
        assert resp.status == 200
    async with http.get(source["download_url"]) as resp:
        assert resp.headers["Content-Type"] == stored
        assert await resp.read() == b"payload"


async def test_reupload_replaces(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    await put(http, source["upload_url"], b"first version")
    await put(http, source["upload_url"], b"second")
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == b"second"


async def test_two_sources_are_separate(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    a, b = await gateway.create_source(http), await gateway.create_source(http)
    await put(http, a["upload_url"], b"aaa")
    await put(http, b["upload_url"], b"bbbb")
    async with http.get(a["download_url"]) as resp:
        assert await resp.read() == b"aaa"
    async with http.get(b["download_url"]) as resp:
        assert await resp.read() == b"bbbb"


async def test_upload_answers_exactly_200(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway()
    source = await gateway.create_source(http)
    resp = await put(http, source["upload_url"], b"x" * 10)
    assert resp.status == 200
