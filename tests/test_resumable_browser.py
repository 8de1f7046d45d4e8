"""Uppy in a real browser (issue 20, point 8): Debian's Chromium, headless, loads a page from
another origin than the gateway's, and Uppy's ``@uppy/tus`` (the pinned ``uppy`` bundle from
tests/peers, installed by ``make test``'s tool step) uploads an archive to the source's
``upload_url``, through the gateway's CORS answers, in one request, in chunks, and across a cut
connection (Uppy's own retry resumes). The page reports to the page's server what Uppy said.

Chromium comes from .ci/ensure-tools (Debian's package, as nginx does). Without it or Node's
packages these tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .dropproxy import DropProxy
from .helpers import SMALL_PART, Spawn, StartGateway, stored
from .ports import free_port

PEERS = Path(__file__).parent / "peers"
PEERS_DIR = Path(
    os.environ.get("GATEWAY_PEERS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sources-gateway/peers"
)
# How long the page may take, Chromium's start included.
PAGE_TIMEOUT = 90
BROWSERS = ("chromium", "chromium-browser")


def missing(problem: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{problem}: the browser tests must run in CI")
    pytest.skip(problem)


@pytest.fixture
def chromium() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        missing("chromium is not installed (run `make test-tools` as root)")
    assert found is not None
    return found


@pytest.fixture
def uppy_bundle() -> Path:
    bundle = PEERS_DIR / "node_modules" / "uppy" / "dist" / "uppy.min.mjs"
    if not bundle.is_file():
        missing(f"uppy is not installed in {PEERS_DIR} (run `make test-tools`)")
    return bundle


class Page:
    """The page's own server, on an origin of its own: the page, Uppy, the archive, and the
    report the page sends when Uppy is done."""

    def __init__(self, bundle: Path, data: bytes, endpoint: str, chunk: int, port: int) -> None:
        self.bundle = bundle
        self.data = data
        self.config = {"endpoint": endpoint, "chunkSize": chunk}
        self.port = port
        self.origin = f"http://localhost:{port}"  # not the gateway's 127.0.0.1: another origin
        self.reported: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/uppy.min.mjs", self.uppy)
        app.router.add_get("/config", self.give_config)
        app.router.add_get("/archive", self.archive)
        app.router.add_post("/report", self.report)
        return app

    async def page(self, request: web.Request) -> web.Response:
        return web.FileResponse(PEERS / "uppy_page.html")  # type: ignore[return-value]

    async def uppy(self, request: web.Request) -> web.Response:
        body = await asyncio.to_thread(self.bundle.read_bytes)
        return web.Response(body=body, content_type="text/javascript")

    async def give_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.config)

    async def archive(self, request: web.Request) -> web.Response:
        return web.Response(body=self.data, content_type="application/gzip")

    async def report(self, request: web.Request) -> web.Response:
        if not self.reported.done():
            self.reported.set_result(json.loads(await request.read()))
        return web.Response(status=204)


async def run_page(
    aiohttp_server: Any, spawn: Spawn, chromium: str, page: Page, tmp_path: Path
) -> dict[str, Any]:
    await aiohttp_server(page.app(), port=page.port)
    await spawn(
        chromium,
        "--headless=new",
        "--no-sandbox",  # as root, as CI runs
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp_path / 'chromium'}",
        f"{page.origin}/",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(page.reported, PAGE_TIMEOUT)


@pytest.mark.parametrize(("chunk", "cut"), [(0, False), (3 * SMALL_PART // 2, False), (0, True)])
async def test_uppy_uploads_from_a_page_on_another_origin(
    start_gateway: StartGateway,
    aiohttp_server: Any,
    http: aiohttp.ClientSession,
    spawn: Spawn,
    chromium: str,
    uppy_bundle: Path,
    tmp_path: Path,
    s3: Any,
    chunk: int,
    cut: bool,
) -> None:
    proxy = DropProxy(0, after=2 * SMALL_PART + 5000, linger=0.3)
    page_port = free_port()
    origin = f"http://localhost:{page_port}"
    overrides: dict[str, Any] = {"cors": {"allowed_origins": [origin]}}
    if cut:
        overrides["server"] = {"public_url": proxy.url}
    gateway = await start_gateway(overrides)
    proxy.upstream_port = gateway.server.port or 0
    source = await gateway.create_source(http)
    data = os.urandom(4 * SMALL_PART + 99)
    page = Page(uppy_bundle, data, source["upload_url"], chunk, page_port)
    async with proxy.running():
        result = await run_page(aiohttp_server, spawn, chromium, page, tmp_path)
        assert result["ok"], result
        async with http.get(source["download_url"]) as resp:
            assert await resp.read() == data
    assert stored(s3, gateway, source) == data
    lines = gateway.access_lines()
    created = [x for x in lines if x["method"] == "POST" and x["status"] == 201]
    assert len([x for x in created if x["path"].startswith("/v1/sources/")]) == 1
    # The browser asked first: preflights from the page's origin, answered.
    assert any(x["method"] == "OPTIONS" and x["status"] == 204 for x in lines)
    assert result["url"].startswith(f"{gateway.config.server.public_url}/v1/sources/")
    if chunk:
        assert len([x for x in lines if x["method"] == "PATCH"]) >= 3
    if cut:
        assert proxy.dropped == 1
        assert result["retries"], result
        assert any(x["method"] == "HEAD" and "/uploads/" in x["path"] for x in lines)
