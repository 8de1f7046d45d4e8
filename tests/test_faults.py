"""S3 misbehaving under a real gateway: a fault-injecting proxy between the gateway and moto.

What must hold whatever S3 does: a part that failed is retried (botocore's retries,
``storage.max_attempts``) and the upload completes byte-exact; when retries run out, the upload
answers a JSON 502/503, the multipart upload is aborted (none left in ``list_multipart_uploads``),
no partial object is visible and an earlier complete upload of the same source is intact; a
download that breaks mid-body ends with a closed connection short of ``Content-Length``; and no
request hangs (``storage.read_timeout``).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from .faultproxy import Fault, FaultProxy, fault_proxy
from .helpers import SMALL_PART, Gateway, StartGateway, chunks_of, open_uploads, stored

# Generous bound on any one request in these tests: a hang fails the test instead of the run.
HANG_GUARD_SECONDS = 60
# Short enough that a stalled S3 call ends quickly, long enough for moto on a loaded machine.
READ_TIMEOUT = 1.5
PART_QUERY = "partNumber="
PRESIGNED_QUERY = "X-Amz-Signature="  # the streamed single PUT goes to a presigned URL


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(moto_endpoint) as p:
        yield p


@dataclass
class Rig:
    """Gateways whose S3 traffic goes through the fault proxy, and the test's clients."""

    start_gateway: StartGateway
    proxy: FaultProxy
    http: aiohttp.ClientSession
    s3: Any

    async def gateway(self, *, attempts: int = 1) -> Gateway:
        storage = {"endpoint_url": self.proxy.url, "max_attempts": attempts}
        return await self.start_gateway({"storage": {**storage, "read_timeout": READ_TIMEOUT}})


@pytest.fixture
def rig(
    start_gateway: StartGateway, proxy: FaultProxy, http: aiohttp.ClientSession, s3: Any
) -> Rig:
    return Rig(start_gateway, proxy, http, s3)


async def upload(
    http: aiohttp.ClientSession, url: str, data: bytes, *, chunked: bool
) -> tuple[int, dict[str, Any], Any]:
    body: Any = chunks_of(data, 16 * 1024) if chunked else io.BytesIO(data)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        async with http.put(url, data=body) as resp:
            return resp.status, await resp.json(), resp.headers


async def refused_download(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> CIMultiDictProxy[str]:
    """GET ``url``, which must answer a JSON 503 (not hang, not break off); its headers."""
    async with asyncio.timeout(HANG_GUARD_SECONDS), http.get(url, headers=headers) as resp:
        assert resp.status == 503
        assert set(await resp.json()) == {"error"}
        return resp.headers


# --- retried where safe ---------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["500", "503", "drop", "stall"])
async def test_failed_part_is_retried(rig: Rig, action: Any) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway(attempts=3)
    proxy.add(Fault(action, method="PUT", query=PART_QUERY, nth=2))
    data = os.urandom(SMALL_PART * 3 + 100)
    source = await gateway.create_source(http)

    status, body, _ = await upload(http, source["upload_url"], data, chunked=True)

    assert status == 200, body
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(s3, gateway, source) == data
    # Four parts, the second one sent twice.
    assert sorted(proxy.part_numbers()) == [1, 2, 2, 3, 4]
    assert open_uploads(s3, gateway) == []


@pytest.mark.parametrize("action", ["503", "drop"])
async def test_failed_put_of_a_short_chunked_body_is_retried(rig: Rig, action: Any) -> None:
    # A chunked body shorter than a part goes as one PUT of its buffer, retried like a part.
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway(attempts=3)
    proxy.add(Fault(action, method="PUT", query=PRESIGNED_QUERY))
    data = os.urandom(SMALL_PART // 2)
    source = await gateway.create_source(http)

    status, body, _ = await upload(http, source["upload_url"], data, chunked=True)

    assert status == 200, body
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert stored(s3, gateway, source) == data
    assert proxy.count("PUT", PRESIGNED_QUERY) == 2
    assert proxy.count("PUT", "uploadId=") == 0


async def test_failed_completion_is_retried(rig: Rig) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway(attempts=3)
    proxy.add(Fault("503", method="POST", query="uploadId="))
    data = os.urandom(SMALL_PART * 2 + 1)
    source = await gateway.create_source(http)

    status, body, _ = await upload(http, source["upload_url"], data, chunked=True)

    assert status == 200, body
    assert stored(s3, gateway, source) == data
    assert proxy.count("POST", "uploadId=") == 2


# --- otherwise aborted cleanly --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "status"), [("500", 503), ("503", 503), ("drop", 503), ("stall", 503)]
)
async def test_part_failing_for_good_aborts(rig: Rig, action: Any, status: int) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway(attempts=2)
    source = await gateway.create_source(http)
    earlier = os.urandom(SMALL_PART * 2 + 7)
    assert (await upload(http, source["upload_url"], earlier, chunked=True))[0] == 200
    proxy.add(Fault(action, method="PUT", query=PART_QUERY, nth=2, times=1000))

    got, body, headers = await upload(
        http, source["upload_url"], os.urandom(SMALL_PART * 4), chunked=True
    )

    assert got == status
    assert set(body) == {"error"}
    assert "Retry-After" in headers
    assert open_uploads(s3, gateway) == []
    assert proxy.count("DELETE", "uploadId=") >= 1
    assert stored(s3, gateway, source) == earlier
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == earlier


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        (Fault("500", method="POST", query="uploads", times=1000), 503),
        (Fault("drop", method="POST", query="uploadId=", times=1000), 503),
        (Fault("stall", method="POST", query="uploadId=", times=1000), 503),
    ],
    ids=["create", "complete-drop", "complete-stall"],
)
async def test_multipart_bookkeeping_failure_aborts(rig: Rig, fault: Fault, status: int) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway(attempts=2)
    earlier = b"an earlier complete upload"
    source = await gateway.uploaded_source(http, earlier)
    proxy.add(fault)

    got, body, _ = await upload(
        http, source["upload_url"], os.urandom(SMALL_PART * 3), chunked=True
    )

    assert got == status, body
    assert set(body) == {"error"}
    assert open_uploads(s3, gateway) == []
    assert stored(s3, gateway, source) == earlier


@pytest.mark.parametrize("action", ["500", "503", "drop", "stall"])
async def test_streamed_put_failure_stores_nothing(rig: Rig, action: Any) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    # The single streamed PUT cannot be replayed (its body is the client's): it is not retried.
    gateway = await rig.gateway(attempts=3)
    earlier = b"an earlier complete upload"
    source = await gateway.uploaded_source(http, earlier)
    proxy.add(Fault(action, method="PUT", query=PRESIGNED_QUERY, times=1000))

    got, body, _ = await upload(http, source["upload_url"], os.urandom(300_000), chunked=False)

    assert got == 503, body
    assert stored(s3, gateway, source) == earlier
    assert set(body) == {"error"}
    assert proxy.count("PUT", PRESIGNED_QUERY) == 2


# --- downloads ------------------------------------------------------------------------------


# A dropped GetObject fails before the headers go out: see test_download_when_get_object_fails.
@pytest.mark.parametrize("action", ["truncate", "stall_body"])
async def test_download_broken_mid_body_closes_short(rig: Rig, action: Any) -> None:
    proxy, http = rig.proxy, rig.http
    gateway = await rig.gateway(attempts=1)
    data = os.urandom(2 * 1024 * 1024)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault(action, method="GET", path=source["id"], exclude_query="tagging", times=1000))

    received = b""
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(source["download_url"]) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(len(data))
                async for chunk in resp.content.iter_any():
                    received += chunk
    assert len(received) < len(data)
    assert data.startswith(received)


# The lookups before the headers: a ranged download's HeadObject, a plain one's tagging (it asks
# for the body beside it, no HeadObject: tests/test_download_open.py).
@pytest.mark.parametrize("action", ["500", "503", "drop", "stall"])
@pytest.mark.parametrize(
    ("method", "query", "headers"),
    [("HEAD", None, {"Range": "bytes=0-3"}), ("GET", "tagging", {})],
    ids=["ranged", "plain"],
)
async def test_download_when_s3_fails_before_headers(
    rig: Rig, action: Any, method: str, query: str | None, headers: dict[str, str]
) -> None:
    proxy, http = rig.proxy, rig.http
    gateway = await rig.gateway(attempts=1)
    source = await gateway.uploaded_source(http, b"archive")
    proxy.add(Fault(action, method=method, query=query, path=source["id"], times=1000))

    assert "Retry-After" in await refused_download(http, source["download_url"], headers)


async def test_download_retried_when_s3_recovers(rig: Rig) -> None:
    proxy, http = rig.proxy, rig.http
    gateway = await rig.gateway(attempts=3)
    data = os.urandom(100_000)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault("503", method="GET", path=source["id"], exclude_query="tagging"))

    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    assert proxy.count("GET", "") - proxy.count("GET", "tagging") == 2


@pytest.mark.parametrize("action", ["500", "drop"])
async def test_download_when_get_object_fails_is_still_json(rig: Rig, action: Any) -> None:
    """HEAD works, GetObject does not: the body is asked for before the headers go out."""
    proxy, http = rig.proxy, rig.http
    gateway = await rig.gateway(attempts=1)
    source = await gateway.uploaded_source(http, b"archive")
    proxy.add(Fault(action, method="GET", path=source["id"], exclude_query="tagging", times=9))

    await refused_download(http, source["download_url"])
    async with http.head(source["download_url"]) as resp:
        assert resp.status == 200  # HEAD needs no body from S3


async def test_upload_stored_even_if_tagging_fails(rig: Rig) -> None:
    proxy, http = rig.proxy, rig.http
    gateway = await rig.gateway(attempts=1)
    source = await gateway.create_source(http)
    proxy.add(Fault("503", method="PUT", query="tagging", times=9))
    status, body, _ = await upload(http, source["upload_url"], b"archive bytes", chunked=False)
    assert status == 200  # the archive is whole in S3: the client must not be told otherwise
    assert body["sha256"] == hashlib.sha256(b"archive bytes").hexdigest()
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == b"archive bytes"
        assert "X-Checksum-Sha256" not in resp.headers


# --- an S3 that completes a multipart upload without an ETag --------------------------------------


async def test_empty_etag_from_complete_multipart_is_looked_up(rig: Rig) -> None:
    proxy, http, s3 = rig.proxy, rig.http, rig.s3
    gateway = await rig.gateway()
    source = await gateway.create_source(http)
    proxy.add(Fault("empty_etag", method="POST", query="uploadId="))
    data = os.urandom(3 * SMALL_PART + 100)
    status, body, headers = await upload(http, source["upload_url"], data, chunked=True)
    assert status == 200, body
    assert [what for m, _, what in proxy.requests if m == "POST"][-1] == "empty_etag"
    key = f"{gateway.config.storage.prefix}{source['id']}"
    real = s3.head_object(Bucket=gateway.config.storage.bucket, Key=key)["ETag"]
    assert headers["ETag"] == real  # the answer names the object's real ETag
    tags = s3.get_object_tagging(Bucket=gateway.config.storage.bucket, Key=key)["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags}["sha256-etag"] == real.strip('"')
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == data
        assert resp.headers["X-Checksum-Sha256"] == hashlib.sha256(data).hexdigest()
        assert resp.headers["Repr-Digest"].startswith("sha-256=:")
        assert resp.headers["ETag"] == real
