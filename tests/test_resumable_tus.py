"""tus 1.0.0 on the source URLs, spoken in raw HTTP: creation, offsets, appends, checksums,
termination, discovery, and what completion gives (SPEC "Resumable uploads")."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
from typing import Any

import aiohttp

from .helpers import SMALL_PART, Gateway, StartGateway, chunks_of, open_uploads, stored

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
    for start, end in itertools.pairwise(cuts):
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


async def test_deferred_length_is_declared_by_the_last_patch(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(SMALL_PART + 99)
    source, url = await new_upload(gateway, http, None)
    assert (await head(http, url)).headers["Upload-Defer-Length"] == "1"
    assert (await patch(http, url, 0, data[:500])).status == 204
    assert stored(s3, gateway, source) is None
    resp = await patch(http, url, 500, data[500:], **{"Upload-Length": str(len(data))})
    assert resp.status == 204
    assert stored(s3, gateway, source) == data


async def test_creation_with_upload_stores_the_body(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(3000)
    source = await gateway.create_source(http)
    metadata = "filename " + base64.b64encode(b"a.tgz").decode()
    metadata += ",filetype " + base64.b64encode(b"application/x-gzip").decode()
    headers = {
        **TUS,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": metadata,
        "Content-Type": OFFSET_TYPE,
    }
    async with http.post(source["upload_url"], data=io.BytesIO(data), headers=headers) as resp:
        assert resp.status == 201
        assert resp.headers["Upload-Offset"] == "3000"
        assert "Upload-Expires" in resp.headers
    assert stored(s3, gateway, source) == data
    async with http.head(source["download_url"]) as resp:
        assert resp.headers["Content-Type"] == "application/x-gzip"


async def test_delete_cancels_and_leaves_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    data = os.urandom(2 * SMALL_PART + 5)
    source, url = await new_upload(gateway, http, len(data))
    await patch(http, url, 0, data[: SMALL_PART + 7])
    async with http.delete(url, headers=TUS) as resp:
        assert resp.status == 204
    assert (await head(http, url)).status == 404
    assert (await patch(http, url, SMALL_PART + 7, data[SMALL_PART + 7 :])).status == 404
    assert stored(s3, gateway, source) is None
    bucket = gateway.config.storage.bucket
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


async def test_options_tells_what_the_server_speaks(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    async with http.options(source["upload_url"]) as resp:
        assert resp.status == 204
        assert resp.headers["Tus-Version"] == "1.0.0"
        extensions = set(resp.headers["Tus-Extension"].split(","))
        assert {"creation", "creation-with-upload", "termination", "checksum"} <= extensions
        assert resp.headers["Tus-Max-Size"] == str(gateway.config.sources.max_size_bytes)
        assert resp.headers["Tus-Checksum-Algorithm"] == "sha1,sha256,md5"
        assert resp.headers["Upload-Limit"].startswith("max-size=")


async def test_too_large_is_413_and_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    limit = gateway.config.sources.max_size_bytes
    source = await gateway.create_source(http)
    assert (await create(http, source["upload_url"], limit + 1)).status == 413
    source, url = await new_upload(gateway, http, None)
    resp = await patch(http, url, 0, os.urandom(limit + 1))  # refused before it is read
    assert resp.status == 413
    assert (await head(http, url)).headers["Upload-Offset"] == "0"
    assert stored(s3, gateway, source) is None


async def test_chunked_body_past_the_limit_fails_the_upload(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway({"sources": {"max_size_bytes": 4 * SMALL_PART}})
    source, url = await new_upload(gateway, http, None)
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE}
    body = chunks_of(os.urandom(4 * SMALL_PART + 1), SMALL_PART // 2)
    async with http.patch(url, data=body, headers=headers) as resp:
        assert resp.status == 413
    assert (await head(http, url)).status == 413  # it can never complete
    assert stored(s3, gateway, source) is None
    assert open_uploads(s3, gateway) == []


async def test_longer_body_than_declared_is_400(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    _, url = await new_upload(gateway, http, 100)
    async with http.patch(
        url,
        data=os.urandom(101),
        headers={**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE},
    ) as resp:
        assert resp.status == 400
        assert (await resp.json())["code"] == "inconsistent_upload_length"
    assert (await patch(http, url, 0, b"x", **{"Upload-Length": "99"})).status == 400


async def test_expired_upload_is_404(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    _, url = await new_upload(gateway, http, 100)
    gateway.clock.advance(gateway.config.sources.resumable.ttl_seconds + 1)
    assert (await head(http, url)).status == 404
    assert (await patch(http, url, 0, b"x")).status == 404


async def test_requests_need_tus_version_and_the_right_token(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source, url = await new_upload(gateway, http, 100)
    async with http.head(url) as resp:
        assert resp.status == 412
        assert resp.headers["Tus-Version"] == "1.0.0"
    _, other = await new_upload(gateway, http, 100)
    forged = url.split("?")[0] + "?token=" + other.split("token=")[1]
    assert (await head(http, forged)).status == 403
    upload_token_url = url.split("?")[0] + "?token=" + source["upload_url"].split("token=")[1]
    assert (await head(http, upload_token_url)).status == 403


async def test_open_uploads_per_source_are_capped(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"sources": {"resumable": {"max_open_per_source": 2}}})
    source = await gateway.create_source(http)
    assert (await create(http, source["upload_url"], 10)).status == 201
    resp = await create(http, source["upload_url"], 10)
    assert resp.status == 201
    assert (await create(http, source["upload_url"], 10)).status == 409
    async with http.delete(resp.headers["Location"], headers=TUS) as deleted:
        assert deleted.status == 204
    assert (await create(http, source["upload_url"], 10)).status == 201
