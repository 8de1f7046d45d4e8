"""The IETF resumable-upload draft on the source URLs, in raw HTTP as Apple's URLSession and
other clients send it: creation (PUT or POST, ``Upload-Complete``), offset retrieval (HEAD, GET
from interop 9), appends, the 409 and 400 problems, digests, cancellation, 104."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
from typing import Any

import aiohttp

from .helpers import SMALL_PART, Gateway, StartGateway, stored

PARTIAL = "application/partial-upload"


def draft(version: int, complete: bool, **headers: str) -> dict[str, str]:
    return {
        "Upload-Draft-Interop-Version": str(version),
        "Upload-Complete": "?1" if complete else "?0",
        **headers,
    }


def sha256_field(data: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"


async def test_apple_style_put_with_complete_body(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    for version in (8, 9):
        data = os.urandom(5000)
        source = await gateway.create_source(http)
        headers = draft(version, True)
        async with http.put(source["upload_url"], data=data, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Upload-Complete"] == "?1"
            body = await resp.json()
        assert body["sha256"] == hashlib.sha256(data).hexdigest()
        assert stored(s3, gateway, source) == data


async def create(
    http: aiohttp.ClientSession, url: str, version: int, data: bytes = b"", **headers: str
) -> tuple[str, aiohttp.ClientResponse]:
    sent = draft(version, False, **headers)
    async with http.post(url, data=data, headers=sent) as resp:
        assert resp.status == 201, await resp.text()
        return resp.headers["Location"], resp


async def append(
    http: aiohttp.ClientSession,
    url: str,
    version: int,
    offset: int,
    data: bytes,
    complete: bool,
    **headers: str,
) -> aiohttp.ClientResponse:
    sent = draft(version, complete, **{"Upload-Offset": str(offset), **headers})
    if version >= 6:
        sent["Content-Type"] = PARTIAL
    async with http.patch(url, data=io.BytesIO(data), headers=sent) as resp:
        await resp.read()
        return resp


async def test_create_append_complete_in_each_version(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    for version in (5, 6, 7, 8, 9):
        data = os.urandom(2 * SMALL_PART + 321)
        source = await gateway.create_source(http)
        url, resp = await create(http, source["upload_url"], version, data[:1000])
        assert url.startswith(f"{gateway.url}/v1/sources/{source['id']}/uploads/")
        assert resp.headers["Upload-Offset"] == "1000"
        assert resp.headers["Upload-Complete"] == "?0"
        limit = resp.headers["Upload-Limit"]
        assert f"max-size={gateway.config.sources.max_size_bytes}" in limit
        assert ("max-age=" in limit) == (version >= 7)
        resp = await append(http, url, version, 1000, data[1000:SMALL_PART], False)
        assert resp.status == 204
        assert resp.headers["Upload-Offset"] == str(SMALL_PART)
        resp = await append(http, url, version, SMALL_PART, data[SMALL_PART:], True)
        assert resp.status == 200
        assert resp.headers["Upload-Complete"] == "?1"
        assert stored(s3, gateway, source) == data


async def test_curl_data_binary_creation_is_stored_as_gzip(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    """docs/api.md's curl steps: `--data-binary` sends its form type with the creation's body.
    The archive is stored and served as gzip, with its bytes (a store parsing form bodies, as moto
    does, never saw them when that type went on to S3: the completion hung until S3's timeout)."""
    data = os.urandom(SMALL_PART // 2)
    source = await gateway.create_source(http)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    url, _ = await create(http, source["upload_url"], 9, data[:1000], **form)
    resp = await append(http, url, 9, 1000, data[1000:], True)
    assert resp.status == 200
    async with http.get(source["download_url"]) as resp:
        assert resp.headers["Content-Type"] == "application/gzip"
        assert await resp.read() == data


async def test_offset_retrieval_head_and_get_from_9(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 9, b"x" * 700)
    for method in ("HEAD", "GET"):
        headers = {"Upload-Draft-Interop-Version": "9"}
        async with http.request(method, url, headers=headers) as resp:
            assert resp.status == 204
            assert resp.headers["Upload-Offset"] == "700"
            assert resp.headers["Upload-Complete"] == "?0"
            assert resp.headers["Cache-Control"] == "no-store"
    async with http.get(url, headers={"Upload-Draft-Interop-Version": "8"}) as resp:
        assert resp.status == 400


async def test_wrong_offset_is_409_problem(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 8, b"y" * 500)
    resp = await append(http, url, 8, 400, b"z" * 10, False)
    assert resp.status == 409
    assert resp.headers["Upload-Offset"] == "500"
    sent = draft(8, False, **{"Upload-Offset": "400", "Content-Type": PARTIAL})
    async with http.patch(url, data=b"z", headers=sent) as resp:
        problem = await resp.json()
        assert resp.headers["Upload-Complete"] == "?0"
    assert problem["type"].endswith("#mismatching-upload-offset")
    assert (problem["expected-offset"], problem["provided-offset"]) == (500, 400)


async def test_inconsistent_length_is_400_problem(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 9, b"a" * 10, **{"Upload-Length": "20"})
    resp = await append(http, url, 9, 10, b"b" * 5, True)  # complete at 15, declared 20
    assert resp.status == 400
    sent = draft(9, False, **{"Upload-Offset": "10", "Content-Type": PARTIAL})
    sent["Upload-Length"] = "30"
    async with http.patch(url, data=b"c", headers=sent) as resp:
        assert resp.status == 400
        assert (await resp.json())["type"].endswith("#inconsistent-upload-length")


async def test_content_digest_mismatch_discards_the_append(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 9)
    wrong = {"Content-Digest": sha256_field(b"other")}
    assert (await append(http, url, 9, 0, b"data", False, **wrong)).status == 400
    right = {"Content-Digest": sha256_field(b"data")}
    resp = await append(http, url, 9, 0, b"data", False, **right)
    assert (resp.status, resp.headers["Upload-Offset"]) == (204, "4")


async def test_repr_digest_mismatch_fails_the_upload(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.create_source(http)
    declared = {"Repr-Digest": sha256_field(b"the whole thing")}
    url, _ = await create(http, source["upload_url"], 9, b"the whole ", **declared)
    resp = await append(http, url, 9, 10, b"THING", True)
    assert resp.status == 400
    assert stored(s3, gateway, source) is None
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 9, b"the whole ", **declared)
    assert (await append(http, url, 9, 10, b"thing", True)).status == 200
    assert stored(s3, gateway, source) == b"the whole thing"


async def test_delete_and_unknown_versions(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.create_source(http)
    url, _ = await create(http, source["upload_url"], 7, b"q" * 10)
    async with http.delete(url, headers={"Upload-Draft-Interop-Version": "7"}) as resp:
        assert resp.status == 204
    async with http.head(url, headers={"Upload-Draft-Interop-Version": "7"}) as resp:
        assert resp.status == 404
    # Version 3 is off by default: a PUT in it is the plain upload it always was.
    headers = {"Upload-Draft-Interop-Version": "3", "Upload-Incomplete": "?0"}
    async with http.put(source["upload_url"], data=b"plain", headers=headers) as resp:
        assert resp.status == 200
        assert "Location" not in resp.headers
    assert stored(s3, gateway, source) == b"plain"


async def test_version_3_when_enabled(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway({"sources": {"resumable": {"interop_versions": [3, 9]}}})
    source = await gateway.create_source(http)
    headers = {"Upload-Draft-Interop-Version": "3", "Upload-Incomplete": "?1"}
    async with http.post(source["upload_url"], data=b"abc", headers=headers) as resp:
        assert resp.status == 201
        assert resp.headers["Upload-Incomplete"] == "?1"
        url = resp.headers["Location"]
    headers = {"Upload-Draft-Interop-Version": "3", "Upload-Incomplete": "?0", "Upload-Offset": "3"}
    async with http.patch(url, data=b"def", headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Upload-Incomplete"] == "?0"
    assert stored(s3, gateway, source) == b"abcdef"


async def read_interim(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_104_only_when_configured(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    for send_104, version in ((False, 8), (True, 3), (True, 8)):
        gateway = await start_gateway({"sources": {"resumable": {"send_104": send_104}}})
        source = await gateway.create_source(http)
        target = source["upload_url"].removeprefix(gateway.url)
        request = (
            f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            f"Upload-Draft-Interop-Version: {version}\r\nUpload-Complete: ?1\r\n"
            "Upload-Incomplete: ?0\r\n\r\n0123456789"
        ).encode()
        head = await read_interim(gateway.server.port or 0, request)
        first = head.split(b"\r\n")[0]
        if send_104 and version == 8:  # never to a version that is not enabled (3)
            assert first == b"HTTP/1.1 104 Upload Resumption Supported"
            assert b"Location: " + gateway.url.encode() in head
        else:
            assert first == b"HTTP/1.1 200 OK"
