"""CORS: preflights for browser uploads and downloads, headers on the actual responses."""

from __future__ import annotations

import aiohttp

from .helpers import Gateway, StartGateway

ORIGIN = "https://console.example.com"


def preflight(method: str, origin: str = ORIGIN, headers: str = "content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_off_by_default(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    source = await gateway.create_source(http)
    async with http.options(source["upload_url"], headers=preflight("PUT")) as resp:
        assert resp.status == 204  # tus discovery answers OPTIONS, but no CORS grant
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with http.get(f"{gateway.url}/healthz", headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 200
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_preflights_for_sources_and_api(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"cors": {"allowed_origins": [ORIGIN], "max_age": 120}})
    source = await gateway.create_source(http)
    cases = [
        (source["upload_url"], "PUT", "content-type, content-md5"),
        (source["download_url"], "GET", "range"),
        (f"{gateway.url}/v1/sources", "POST", "authorization, content-type"),
    ]
    for url, method, headers in cases:
        async with http.options(url, headers=preflight(method, headers=headers)) as resp:
            assert resp.status == 204, (method, await resp.text())
            assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert method in resp.headers["Access-Control-Allow-Methods"].split(", ")
            allowed = resp.headers["Access-Control-Allow-Headers"].lower().split(", ")
            assert set(headers.split(", ")) <= set(allowed)
            assert resp.headers["Access-Control-Max-Age"] == "120"
            assert "Origin" in resp.headers["Vary"]
            assert "Access-Control-Allow-Credentials" not in resp.headers


async def test_refused_preflights(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"cors": {"allowed_origins": [ORIGIN]}})
    source = await gateway.create_source(http)
    url = source["upload_url"]
    async with http.options(url, headers=preflight("PUT", origin="https://evil.example")) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
        assert (await resp.json())["code"] == "forbidden"
    async with http.options(url, headers=preflight("DELETE")) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Methods" not in resp.headers
    async with http.options(f"{gateway.url}/nowhere", headers=preflight("GET")) as resp:
        assert resp.status == 404
    # A plain OPTIONS (no preflight) is tus discovery, with the CORS headers of an answer.
    async with http.options(url, headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 204
        assert resp.headers["Tus-Version"] == "1.0.0"
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.options(f"{gateway.url}/v1/sources", headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 405  # a path without OPTIONS


async def test_actual_requests_carry_the_headers(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"cors": {"allowed_origins": [ORIGIN]}})
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"archive", headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 200
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        exposed = resp.headers["Access-Control-Expose-Headers"].split(", ")
        assert {"ETag", "X-Request-ID"} <= set(exposed)
        assert "Origin" in resp.headers.getall("Vary")
    async with http.get(source["download_url"], headers={"Origin": ORIGIN}) as resp:
        assert await resp.read() == b"archive"
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert "X-Checksum-Sha256" in resp.headers["Access-Control-Expose-Headers"]
        # The file name a download is saved under.
        assert "Content-Disposition" in resp.headers["Access-Control-Expose-Headers"]
    # Errors too, so a page can read why it failed.
    async with http.get(source["upload_url"], headers={"Origin": ORIGIN}) as resp:
        assert resp.status == 403
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.get(source["download_url"], headers={"Origin": "https://other.example"}) as r:
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_any_origin(start_gateway: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start_gateway({"cors": {"allowed_origins": ["*"]}})
    source = await gateway.create_source(http)
    headers = preflight("PUT", origin="https://anywhere.example")
    async with http.options(source["upload_url"], headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(f"{gateway.url}/healthz", headers={"Origin": "https://x.example"}) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_resumable_uploads_from_a_page(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"cors": {"allowed_origins": [ORIGIN]}})
    source = await gateway.create_source(http)
    tus = "tus-resumable, upload-length, upload-metadata, upload-offset, upload-checksum"
    async with http.options(source["upload_url"], headers=preflight("POST", headers=tus)) as resp:
        assert resp.status == 204
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert all(h.strip() in allowed for h in tus.split(","))
    headers = {"Origin": ORIGIN, "Tus-Resumable": "1.0.0", "Upload-Length": "10"}
    async with http.post(source["upload_url"], headers=headers) as resp:
        assert resp.status == 201
        exposed = resp.headers["Access-Control-Expose-Headers"]
        for name in (
            "Location",
            "Upload-Offset",
            "Upload-Length",
            "Upload-Expires",
            "Tus-Resumable",
        ):
            assert name in exposed
        location = resp.headers["Location"]
    async with http.options(location, headers=preflight("PATCH", headers=tus)) as resp:
        assert resp.status == 204
        methods = resp.headers["Access-Control-Allow-Methods"]
        assert {"PATCH", "HEAD", "DELETE"} <= set(methods.replace(" ", "").split(","))
    upload_draft = "upload-draft-interop-version, upload-complete, content-digest"
    async with http.options(location, headers=preflight("PATCH", headers=upload_draft)) as resp:
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert all(h.strip() in allowed for h in upload_draft.split(","))
