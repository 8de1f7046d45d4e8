"""Uploads under real traffic: Expect: 100-continue, size limits, broken clients, bad digests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from .helpers import SMALL_PART, TOKEN, Gateway, StartGateway, chunks_of, open_uploads, stored


def object_key(source: dict[str, Any]) -> str:
    return f"sources/{source['id']}"


async def raw_request(url: str, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = f"{parts.path}?{parts.query}" if parts.query else parts.path
    writer.write(f"PUT {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_status_line(reader: asyncio.StreamReader) -> str:
    return (await asyncio.wait_for(reader.readline(), timeout=10)).decode().strip()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status = int((await read_status_line(reader)).split()[1])
    headers: dict[str, str] = {}
    while (line := (await reader.readline()).decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_expect_continue_accepted(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    data = os.urandom(3000)
    reader, writer = await raw_request(
        source["upload_url"], f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n"
    )
    try:
        # The client waits for the 100 before it sends a byte, as curl does for large files.
        assert await read_status_line(reader) == "HTTP/1.1 100 Continue"
        assert await reader.readline() == b"\r\n"
        writer.write(data)
        status, _, body = await read_response(reader)
        assert status == 200, body
    finally:
        writer.close()
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == data


@pytest.mark.parametrize("case", ["bad-token", "expired", "too-large"])
async def test_expect_continue_refused_without_the_body(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any, case: str
) -> None:
    source = await gateway.create_source(http)
    url, length = source["upload_url"], 1000
    if case == "bad-token":
        url = url.replace("token=", "token=x")
    elif case == "expired":
        gateway.clock.advance(601)
    else:
        length = gateway.config.sources.max_size_bytes + 1
    reader, writer = await raw_request(url, f"Content-Length: {length}\r\nExpect: 100-continue\r\n")
    try:
        status, headers, body = await read_response(reader)  # the final answer, not a 100
    finally:
        writer.close()
    assert status == (413 if case == "too-large" else 403)
    assert headers["content-type"].startswith("application/json")
    assert b"error" in body
    assert headers.get("connection") == "close"
    assert stored(s3, gateway, source) is None


async def test_content_length_over_limit_is_413_before_reading(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.create_source(http)
    limit = gateway.config.sources.max_size_bytes
    # Only the headers are sent: the answer must come without waiting for the body.
    reader, writer = await raw_request(source["upload_url"], f"Content-Length: {limit + 1}\r\n")
    try:
        status, _, body = await read_response(reader)
    finally:
        writer.close()
    assert status == 413
    assert b"larger than" in body
    assert stored(s3, gateway, source) is None


async def test_chunked_body_over_limit_is_cut(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.uploaded_source(http, b"earlier complete upload")
    limit = gateway.config.sources.max_size_bytes
    data = os.urandom(limit + SMALL_PART)

    try:
        async with http.put(source["upload_url"], data=chunks_of(data, 64 * 1024)) as resp:
            assert resp.status == 413
            assert "larger than" in (await resp.json())["error"]
    except aiohttp.ClientOSError:
        pass  # the gateway closed while the client was still writing: a refusal all the same
    assert _aborted(gateway) == 1
    assert stored(s3, gateway, source) == b"earlier complete upload"
    assert open_uploads(s3, gateway) == []


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_client_disconnect_mid_body_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any, chunked: bool
) -> None:
    source = await gateway.uploaded_source(http, b"earlier complete upload")
    sent = os.urandom(SMALL_PART * 3)
    head = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(sent) * 2}\r\n"
    _reader, writer = await raw_request(source["upload_url"], head)
    if chunked:
        for i in range(0, len(sent), 16384):
            piece = sent[i : i + 16384]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    else:
        writer.write(sent)
    await writer.drain()
    await asyncio.sleep(0.3)  # let the gateway start storing what it got
    writer.transport.abort()  # the client vanishes mid-body

    for _ in range(50):  # the gateway notices and cleans up asynchronously
        if _aborted(gateway) >= 1:
            break
        await asyncio.sleep(0.1)
    assert _aborted(gateway) == 1
    assert stored(s3, gateway, source) == b"earlier complete upload"
    assert open_uploads(s3, gateway) == []
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == b"earlier complete upload"


def _aborted(gateway: Gateway) -> float:
    from gateway.server import keys

    value = gateway.app[keys.METRICS].registry.get_sample_value(
        "gateway_uploads_total", {"outcome": "aborted"}
    )
    return value or 0.0


@pytest.mark.parametrize("size", [0, 100, SMALL_PART * 2 + 1])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_wrong_content_md5_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any, size: int, chunked: bool
) -> None:
    source = await gateway.uploaded_source(http, b"earlier complete upload")
    data = os.urandom(size)
    wrong = base64.b64encode(hashlib.md5(data + b"x").digest()).decode()
    body: Any = chunks_of(data) if chunked else data
    async with http.put(source["upload_url"], data=body, headers={"Content-MD5": wrong}) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "bad_digest"
    assert stored(s3, gateway, source) == b"earlier complete upload"
    assert open_uploads(s3, gateway) == []

    right = base64.b64encode(hashlib.md5(data).digest()).decode()
    body = chunks_of(data) if chunked else data
    async with http.put(source["upload_url"], data=body, headers={"Content-MD5": right}) as resp:
        assert resp.status == 200
    assert stored(s3, gateway, source) == data


async def test_malformed_content_md5_is_400_before_reading(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    async with http.put(
        source["upload_url"], data=b"x", headers={"Content-MD5": "not-base64!"}
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "bad_digest"


async def test_sha256_is_kept_as_object_tag(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.create_source(http)
    data = os.urandom(SMALL_PART + 3)
    async with http.put(source["upload_url"], data=chunks_of(data)) as resp:
        sha = (await resp.json())["sha256"]
    assert sha == hashlib.sha256(data).hexdigest()
    tags = s3.get_object_tagging(Bucket=gateway.config.storage.bucket, Key=object_key(source))
    assert {"Key": "sha256", "Value": sha} in tags["TagSet"]


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_stalled_body_is_given_up(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, chunked: bool
) -> None:
    gateway = await start_gateway({"server": {"body_timeout": 1}})
    source = await gateway.uploaded_source(http, b"earlier complete upload")
    sent = os.urandom(SMALL_PART * 2)
    head = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(sent) * 2}\r\n"
    reader, writer = await raw_request(source["upload_url"], head)
    try:
        writer.write(f"{len(sent):x}\r\n".encode() + sent + b"\r\n" if chunked else sent)
        await writer.drain()
        # ...and then nothing more: the gateway answers instead of waiting for ever.
        status, headers, body = await asyncio.wait_for(read_response(reader), 20)
    finally:
        writer.close()
    assert status == 408
    assert "no body data" in json.loads(body)["error"]
    assert headers.get("connection") == "close"
    assert stored(s3, gateway, source) == b"earlier complete upload"
    assert open_uploads(s3, gateway) == []


async def raw_post(gateway: Gateway, target: str, head: str) -> tuple[int, bytes]:
    """POST ``target`` with ``head`` and ``Expect: 100-continue``, sending no body: the first
    answer's status (a 100 if the server asks for the body), and what came with it."""
    parts = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nExpect: 100-continue\r\n"
            f"Content-Type: application/json\r\nContent-Length: 2\r\n{head}\r\n".encode()
        )
        status = int((await read_status_line(reader)).split()[1])
        if status == 100:
            assert await reader.readline() == b"\r\n"
            writer.write(b"{}")
        rest = await asyncio.wait_for(reader.read(65536), timeout=10)
        return status, rest
    finally:
        writer.close()


@pytest.mark.parametrize(
    "target",
    [
        "/v1/sources",
        "/v1/apps/my-app/deployments",
        "/v1/apps/my-app/deployments/0b7c6a4e-3c1a-4d8e-9a57-1c2d3e4f5a6b/events?token=bad",
        "/v1/tokens/exchange",
    ],
)
@pytest.mark.parametrize("auth", ["", "Authorization: Bearer wrong-token\r\n"])
async def test_expect_continue_only_after_the_credentials(
    gateway: Gateway, target: str, auth: str
) -> None:
    """A refused request is answered at once: the client never sends its body."""
    status, rest = await raw_post(gateway, target, auth)
    assert status in (401, 403), rest


@pytest.mark.parametrize(
    ("target", "final"), [("/v1/sources", b" 201 "), ("/v1/apps/my-app/deployments", b" 422 ")]
)
async def test_expect_continue_once_the_credentials_are_accepted(
    gateway: Gateway, target: str, final: bytes
) -> None:
    status, rest = await raw_post(gateway, target, f"Authorization: Bearer {TOKEN}\r\n")
    assert status == 100
    assert final in rest.split(b"\r\n", 1)[0], rest
