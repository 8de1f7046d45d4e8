"""Every error is JSON with the right status; every response has an X-Request-ID."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.server.adapters.s3 import S3Store

from .helpers import Gateway


async def test_unknown_route_is_json_404(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/nope") as resp:
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert await resp.json() == {"resource": "route", "error": "not found"}
        assert resp.headers["X-Request-ID"]


async def test_malformed_source_id_is_404(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/v1/sources/../../etc/passwd?token=x") as resp:
        assert resp.status == 404
    async with http.put(f"{gateway.url}/v1/sources/not-a-uuid?token=x", data=b"x") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"] == "not found"


async def test_wrong_method_is_json_405(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    async with http.delete(f"{gateway.url}/v1/sources") as resp:
        assert resp.status == 405
        assert await resp.json() == {"error": "method not allowed"}
        assert "POST" in resp.headers["Allow"]


async def test_request_id_is_kept_or_generated(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{gateway.url}/v1/sources", headers={**gateway.auth, "X-Request-ID": "abc-123"}
    ) as resp:
        assert resp.headers["X-Request-ID"] == "abc-123"
    async with http.post(
        f"{gateway.url}/v1/sources", headers={"X-Request-ID": "bad id\twith spaces"}
    ) as resp:
        assert resp.status == 401
        generated = resp.headers["X-Request-ID"]
        assert generated != "bad id\twith spaces" and len(generated) == 32
    async with http.post(f"{gateway.url}/v1/sources") as resp:
        assert resp.headers["X-Request-ID"] != generated


async def test_internal_error_hides_its_details(
    gateway: Gateway, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await gateway.create_source(http)

    async def explode(self: S3Store, key: str) -> None:
        raise RuntimeError("secret internal detail /etc/keys")

    def explode_open(self: S3Store, key: str) -> None:
        raise RuntimeError("secret internal detail /etc/keys")

    monkeypatch.setattr(S3Store, "stat", explode)
    monkeypatch.setattr(S3Store, "open", explode_open)  # a plain GET's lookup (no HeadObject)
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 500
        assert resp.content_type == "application/json"
        text = await resp.text()
        assert "secret internal detail" not in text and "Traceback" not in text
        assert await resp.json() == {"error": "internal server error"}
        assert resp.headers["X-Request-ID"]
