"""Resumable uploads whose parts complete at the source's key (no staging copy), as the module
docstring of ``gateway.server.domain.resumable_finish`` describes: the multipart upload goes to the
source's key when the request starting it checks the bytes as they stream and the key is free; an
object completed there before it is checked is held back from every read until it is; a refusal
or a newer upload never leaves a held object visible, and never removes another upload's."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp

from .archives import app, file, tgz
from .helpers import SMALL_PART, Gateway, StartGateway, open_uploads, stored
from .test_deployments import own_url_errors
from .test_resumable_carried import earlier_archive_and_upload, read_back, served
from .test_resumable_instances import TUS, new_upload, on, patch

OFFSET_TYPE = "application/offset+octet-stream"
ENFORCE = {"sources": {"archive_check": "enforce"}}


def source_key(gateway: Gateway, source: dict[str, Any]) -> str:
    return f"{gateway.config.storage.prefix}{source['id']}"


def tags(s3: Any, gateway: Gateway, source: dict[str, Any]) -> dict[str, str]:
    answer = s3.get_object_tagging(
        Bucket=gateway.config.storage.bucket, Key=source_key(gateway, source)
    )
    return {t["Key"]: t["Value"] for t in answer["TagSet"]}


async def gated(data: bytes, held_at: int, gate: asyncio.Event) -> Any:
    for at in range(0, len(data), 16 * 1024):
        if at == held_at:
            await gate.wait()
        yield data[at : at + 16 * 1024]


async def parts_key_while_sending(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any, url: str, data: bytes
) -> str:
    """Send ``data`` in one PATCH, held after two parts: the key its multipart upload is at."""
    gate = asyncio.Event()
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": OFFSET_TYPE}
    sending = asyncio.ensure_future(
        http.patch(url, data=gated(data, 2 * SMALL_PART + 16 * 1024, gate), headers=headers)
    )
    try:
        for _ in range(400):
            uploads = open_uploads(s3, gateway)
            if uploads:
                break
            await asyncio.sleep(0.02)
        (upload,) = uploads
        return str(upload["Key"])
    finally:
        gate.set()
        async with await sending as resp:
            assert resp.status == 204, await resp.text()


async def test_one_request_completes_at_the_source_key(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(4 * SMALL_PART))])
    source, url = await new_upload(gateway, http, len(data))
    assert await parts_key_while_sending(gateway, http, s3, url, data) == source_key(
        gateway, source
    )
    assert "gateway-held" not in tags(s3, gateway, source)
    resp = await served(s3, gateway, http, source, data)
    assert resp.headers["X-Archive-Root"] == "app-1.2/"
    prefix = gateway.config.sources.resumable.prefix
    keys = s3.list_objects_v2(Bucket=gateway.config.storage.bucket, Prefix=prefix)
    assert [k["Key"] for k in keys.get("Contents", []) if k["Key"].endswith("/data")] == []


async def test_an_existing_archive_sends_the_parts_to_staging(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(4 * SMALL_PART))])
    source, _, url = await earlier_archive_and_upload(gateway, http, data)
    key = await parts_key_while_sending(gateway, http, s3, url, data)
    assert key.startswith(gateway.config.sources.resumable.prefix)
    assert key.endswith("/data")
    assert stored(s3, gateway, source) == data  # the newer complete upload wins


async def test_a_refusal_in_one_request_leaves_nothing(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway(ENFORCE)
    data = tgz([file("../escape", b"x" * 100), file("pad", os.urandom(SMALL_PART * 6))])
    source, url = await new_upload(gateway, http, len(data))
    assert (await patch(http, url, 0, data)).status == 422
    assert stored(s3, gateway, source) is None
    assert open_uploads(s3, gateway) == []
    async with http.head(url, headers=TUS) as resp:
        assert resp.status == 422


async def test_bytes_from_another_instance_are_held_until_checked(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(ENFORCE), await start_gateway(ENFORCE)
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(6 * SMALL_PART))])
    source, url = await new_upload(a, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    (upload,) = open_uploads(s3, a)
    assert upload["Key"] == source_key(a, source)  # A checked what it sent
    assert (await patch(http, on(b, url), half, data[half:])).status == 204
    assert await read_back(b, http) == len(data)
    assert "gateway-held" not in tags(s3, a, source)
    await served(s3, a, http, source, data)


async def test_a_refusal_read_back_removes_the_held_object(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    a, b = await start_gateway(ENFORCE), await start_gateway(ENFORCE)
    # The refusal is past the first request's bytes: A's running check did not see it.
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(6 * SMALL_PART)), file("../x", b"x")])
    source, url = await new_upload(a, http, len(data))
    first = len(data) - 2048
    assert (await patch(http, url, 0, data[:first])).status == 204
    async with http.patch(
        on(b, url),
        data=data[first:],
        headers={**TUS, "Upload-Offset": str(first), "Content-Type": OFFSET_TYPE},
    ) as resp:
        assert resp.status == 422
        assert (await resp.json())["code"] == "archive_invalid"
    assert stored(s3, a, source) is None
    assert open_uploads(s3, a) == []
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 404


async def test_an_upload_completed_meanwhile_is_not_replaced_unchecked(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # A plain PUT completes while a resumable upload's parts wait at the source's key: the
    # resumable one, which B must read back, cannot complete over it (409), and the plain
    # upload's archive stays.
    a, b = await start_gateway(ENFORCE), await start_gateway(ENFORCE)
    data = tgz([*app(), file("app-1.2/big.bin", os.urandom(6 * SMALL_PART))])
    source, url = await new_upload(a, http, len(data))
    half = len(data) // 2
    assert (await patch(http, url, 0, data[:half])).status == 204
    plain = tgz(app())
    async with http.put(source["upload_url"], data=plain) as resp:
        assert resp.status == 200
    async with http.patch(
        on(b, url),
        data=data[half:],
        headers={**TUS, "Upload-Offset": str(half), "Content-Type": OFFSET_TYPE},
    ) as resp:
        assert resp.status == 409
        assert "another upload" in (await resp.json())["error"]
    assert stored(s3, a, source) == plain
    assert open_uploads(s3, a) == []
    async with http.head(url, headers=TUS) as resp:
        assert resp.status == 409


async def test_a_held_object_is_invisible(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    # An object at a source's key marked held (completed, not yet checked) is missing for
    # downloads, HEADs and deployments, until its tags are replaced once it is checked.
    gw = await start_gateway()
    source = await gw.create_source(http)
    archive = tgz(app())
    s3.put_object(
        Bucket=gw.config.storage.bucket,
        Key=source_key(gw, source),
        Body=archive,
        Tagging="gateway-held=1",
    )
    for method in (http.get, http.head):
        async with method(source["download_url"]) as resp:
            assert resp.status == 404
    assert await own_url_errors(gw, http, source["download_url"]) == [
        "source has not been uploaded"
    ]
    s3.delete_object_tagging(Bucket=gw.config.storage.bucket, Key=source_key(gw, source))
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == archive
