"""Downloads: ranges, conditional requests, redirect mode, and a failing object store."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from gateway.errors import RangeNotSatisfiable
from gateway.server.domain.ranges import parse_range

from .helpers import Gateway, StartGateway
from .ports import free_port

DATA = os.urandom(10_000)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-0", (0, 0)),
        ("bytes=0-99", (0, 99)),
        ("bytes=9990-", (9990, 9999)),
        ("bytes=9990-20000", (9990, 9999)),
        ("bytes=-10", (9990, 9999)),
        ("bytes=-20000", (0, 9999)),
        ("bytes=5-4", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: whole object
        ("items=0-5", None),
        ("bytes=abc", None),
        ("bytes=-", None),
        ("bytes= 1-2", (1, 2)),  # stray spaces are forgiven
        ("bytes=²-3", None),  # digits of other scripts are not numbers here
        ("bytes=0-" + "9" * 5000, (0, 9999)),  # more digits than int() takes: past the end
        ("bytes=-" + "9" * 5000, (0, 9999)),
        ("bytes=" + "0" * 5000 + "5-6", (5, 6)),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 10_000) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        ("bytes=10000-", 10_000),
        ("bytes=-0", 10_000),
        ("bytes=0-", 0),
        ("bytes=-5", 0),
        ("bytes=" + "9" * 5000 + "-", 10_000),
    ],
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


@pytest.fixture
async def uploaded(gateway: Gateway, http: aiohttp.ClientSession) -> dict[str, Any]:
    source = await gateway.uploaded_source(http, DATA)
    return source


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=9000-", 9000, 9999),
        ("bytes=-500", 9500, 9999),
        ("bytes=9999-99999", 9999, 9999),
    ],
)
async def test_range_gives_206(
    uploaded: dict[str, Any], http: aiohttp.ClientSession, header: str, start: int, end: int
) -> None:
    async with http.get(uploaded["download_url"], headers={"Range": header}) as resp:
        assert resp.status == 206
        assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
        assert resp.headers["Content-Length"] == str(end - start + 1)
        assert await resp.read() == DATA[start : end + 1]
        # The checksum headers describe the whole representation, also on a 206 (RFC 9530).
        assert resp.headers["X-Checksum-Sha256"]
    async with http.head(uploaded["download_url"], headers={"Range": header}) as head:
        assert head.status == 206
        assert head.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"


async def test_unsatisfiable_range_is_416(
    uploaded: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    async with http.get(uploaded["download_url"], headers={"Range": "bytes=10000-"}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{len(DATA)}"
        assert "error" in await resp.json()


async def test_ignored_ranges_send_everything(
    uploaded: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    for header in ("bytes=0-1,4-5", "lines=1-2"):
        async with http.get(uploaded["download_url"], headers={"Range": header}) as resp:
            assert resp.status == 200
            assert await resp.read() == DATA


async def test_if_none_match_gives_304(
    uploaded: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    async with http.get(uploaded["download_url"]) as resp:
        etag = resp.headers["ETag"]
        await resp.read()
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        async with http.get(uploaded["download_url"], headers={"If-None-Match": header}) as resp:
            assert resp.status == 304
            assert resp.headers["ETag"] == etag
            assert await resp.read() == b""
    async with http.get(uploaded["download_url"], headers={"If-None-Match": '"x"'}) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA


async def test_if_range_with_stale_etag_sends_everything(
    uploaded: dict[str, Any], http: aiohttp.ClientSession
) -> None:
    headers = {"Range": "bytes=0-9", "If-Range": '"stale"'}
    async with http.get(uploaded["download_url"], headers=headers) as resp:
        assert resp.status == 200
        assert await resp.read() == DATA
    async with http.head(uploaded["download_url"]) as resp:
        etag = resp.headers["ETag"]
    async with http.get(
        uploaded["download_url"], headers={"Range": "bytes=0-9", "If-Range": etag}
    ) as resp:
        assert resp.status == 206
        assert await resp.read() == DATA[:10]


async def test_redirect_mode(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"sources": {"download_mode": "redirect"}})
    source = await gateway.uploaded_source(http, DATA)
    gateway.clock.advance(500)  # 100 s of the token's life left
    async with http.get(source["download_url"], allow_redirects=False) as resp:
        assert resp.status == 307
        location = resp.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    expires = int((query.get("X-Amz-Expires") or query["Expires"])[0])
    assert 0 < expires <= 100  # never outlives the token
    async with http.get(source["download_url"]) as resp:  # follows, as curl -L does
        assert resp.status == 200
        assert await resp.read() == DATA
    gateway.clock.advance(101)
    async with http.get(source["download_url"], allow_redirects=False) as resp:
        assert resp.status == 403


def assert_never_rendered(headers: Any, source_id: str) -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == f'attachment; filename="{source_id}.tar.gz"'


async def test_every_download_is_an_attachment_never_sniffed(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    page = b"<html><script>alert(document.cookie)</script></html>"
    headers = {"Content-Type": "text/html"}
    async with http.put(source["upload_url"], data=page, headers=headers) as resp:
        assert resp.status == 200
    url, sid = source["download_url"], source["id"]
    async with http.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/html"  # as uploaded, but not rendered:
        assert_never_rendered(resp.headers, sid)
        etag = resp.headers["ETag"]
    async with http.head(url) as resp:
        assert_never_rendered(resp.headers, sid)
    async with http.get(url, headers={"Range": "bytes=0-5"}) as resp:
        assert resp.status == 206
        assert_never_rendered(resp.headers, sid)
    async with http.get(url, headers={"If-None-Match": etag}) as resp:
        assert resp.status == 304
        assert_never_rendered(resp.headers, sid)


async def test_redirect_mode_downloads_are_attachments_too(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"sources": {"download_mode": "redirect"}})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=DATA) as resp:
        assert resp.status == 200
    async with http.get(source["download_url"], allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        location = resp.headers["Location"]
    disposition = f'attachment; filename="{source["id"]}.tar.gz"'
    assert parse_qs(urlsplit(location).query)["response-content-disposition"] == [disposition]
    async with http.get(location) as resp:  # the object store applies the signed override
        assert resp.status == 200
        assert resp.headers["Content-Disposition"] == disposition


# --- a failing object store ----------------------------------------------------------------------


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers: S3 hanging."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def assert_unavailable(resp: aiohttp.ClientResponse) -> None:
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    body = await resp.json()
    assert set(body) == {"error"} and "storage" in body["error"]


@pytest.mark.parametrize("endpoint", ["refused", "silent"])
async def test_storage_down_gives_503_json(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    silent_endpoint: str,
    endpoint: str,
) -> None:
    url = f"http://127.0.0.1:{free_port()}" if endpoint == "refused" else silent_endpoint
    gateway = await start_gateway(
        {"storage": {"endpoint_url": url, "connect_timeout": 1, "read_timeout": 1}}
    )
    source = await gateway.create_source(http)  # needs no storage
    async with http.put(source["upload_url"], data=b"x" * 1000) as resp:
        await assert_unavailable(resp)
    async with http.put(source["upload_url"], data=chunked(b"x" * 1000)) as resp:
        await assert_unavailable(resp)
    async with http.get(source["download_url"]) as resp:
        await assert_unavailable(resp)


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_storage_error_gives_502_json(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"storage": {"bucket": "no-such-bucket-here"}})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"x" * 100) as resp:
        assert resp.status == 502
        assert await resp.json() == {"error": "storage error"}


async def test_sha256_of_another_version_is_not_served(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    """Two uploads racing: the tag written for the older one must not describe the newer."""
    source = await gateway.uploaded_source(http, b"first")
    key = f"sources/{source['id']}"
    bucket = gateway.config.storage.bucket
    stale_tags = s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    async with http.put(source["upload_url"], data=b"second") as resp:
        assert resp.status == 200
    s3.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": stale_tags})  # late tag
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == b"second"
        assert "X-Checksum-Sha256" not in resp.headers
        assert "Repr-Digest" not in resp.headers


async def test_read_is_pinned_to_the_described_version(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    """A re-upload between the description (headers) and the bytes is an error, not a mix."""
    from gateway.errors import ObjectChanged
    from gateway.server import keys

    source = await gateway.uploaded_source(http, b"first version")
    store = gateway.app[keys.STORE]
    key = f"sources/{source['id']}"
    info = await store.stat(key)
    async with http.put(source["upload_url"], data=b"second") as resp:
        assert resp.status == 200
    with pytest.raises(ObjectChanged):
        async with store.read(key, 0, 4, info.etag):
            pass
    async with store.read(key, 0, 5, (await store.stat(key)).etag) as chunks:
        assert b"".join([c async for c in chunks]) == b"second"


async def test_storage_that_stops_reading_an_upload_gives_503(
    start_gateway: StartGateway, http: aiohttp.ClientSession, silent_endpoint: str
) -> None:
    """S3 accepts the connection, then takes no more bytes: the upload must not wait for ever
    (aiohttp's client has no timeout while it writes a body)."""
    gateway = await start_gateway(
        {
            "storage": {"endpoint_url": silent_endpoint, "read_timeout": 1},
            "sources": {"max_size_bytes": 64 * 1024 * 1024},
        }
    )
    source = await gateway.create_source(http)
    data = os.urandom(32 * 1024 * 1024)  # far more than the socket buffers between them hold
    async with asyncio.timeout(30), http.put(source["upload_url"], data=io.BytesIO(data)) as resp:
        await assert_unavailable(resp)
