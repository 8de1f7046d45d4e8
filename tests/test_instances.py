"""Two instances with one configuration are one service: S3 holds all state."""

from __future__ import annotations

import os

import aiohttp

from .helpers import SECRET, StartGateway


def on(gateway_url: str, url: str) -> str:
    """The same source URL, sent to another instance (what a load balancer does)."""
    path = url.split("/v1/", 1)[1]
    return f"{gateway_url}/v1/{path}"


async def test_create_on_one_upload_on_other_download_on_first(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    first = await start_gateway()
    second = await start_gateway()
    assert first.url != second.url
    data = os.urandom(100_000)
    source = await first.create_source(http)
    assert source["upload_url"].startswith(first.url)

    async with http.put(on(second.url, source["upload_url"]), data=data) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    ranged = {"Range": "bytes=5-9"}
    async with http.get(on(second.url, source["download_url"]), headers=ranged) as resp:
        assert resp.status == 206
        assert await resp.read() == data[5:10]


async def test_instance_with_another_secret_refuses(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    # The mistake the README warns about: a per-instance key breaks URLs across instances.
    first = await start_gateway()
    stranger = await start_gateway({"signing": {"secret_keys": ["another-secret-key-98765"]}})
    source = await first.create_source(http)
    async with http.put(on(stranger.url, source["upload_url"]), data=b"x") as resp:
        assert resp.status == 403
        assert (await resp.json())["code"] == "token_invalid"
    # Rotation: an instance that knows the old key among its keys verifies the URL.
    rotated = await start_gateway({"signing": {"secret_keys": [SECRET, "new-secret-key-13579"]}})
    async with http.put(on(rotated.url, source["upload_url"]), data=b"rotated") as resp:
        assert resp.status == 200
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == b"rotated"
