"""Real resumable-upload clients against the gateway: tus-js-client 4.3.1 (under Node, in each of
its protocol modes) and tuspy 1.1.0, with ``endpoint`` = the source's ``upload_url``.

tus-js-client comes from tests/peers (pinned with its lock), installed into a cache directory by
``make test``'s tool step (.ci/ensure-peers). Without Node or the packages these tests skip, and
fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tusclient import client as tus_client

from .dropproxy import DropProxy
from .helpers import SMALL_PART, Spawn, StartGateway, stored

PEERS = Path(__file__).parent / "peers"
PEERS_DIR = Path(
    os.environ.get("GATEWAY_PEERS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sources-gateway/peers"
)
NODE_TIMEOUT = 60


@pytest.fixture
def node_modules() -> Path:
    """Where tus-js-client is installed; skips (fails under CI=true) when it cannot run."""
    modules = PEERS_DIR / "node_modules"
    problem = None
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif not (modules / "tus-js-client").is_dir():
        problem = f"tus-js-client is not installed in {modules} (run `make test-tools`)"
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}: the tus-js-client tests must run in CI")
        pytest.skip(problem)
    return modules


async def tus_js(
    spawn: Spawn, modules: Path, endpoint: str, path: Path, protocol: str, chunk: int = 0
) -> dict[str, Any]:
    proc = await spawn(
        "node",
        str(PEERS / "tus_upload.cjs"),
        endpoint,
        str(path),
        protocol,
        str(chunk),
        env={**os.environ, "NODE_PATH": str(modules)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["ok"], (result, err.decode())
    return result


async def download(http: aiohttp.ClientSession, source: dict[str, Any]) -> bytes:
    async with http.get(source["download_url"]) as resp:
        assert resp.status == 200
        return await resp.read()


@pytest.mark.parametrize(
    ("protocol", "chunk"),
    [("tus-v1", 0), ("tus-v1", 3 * SMALL_PART // 2), ("ietf-draft-03", 0), ("ietf-draft-05", 0)],
)
async def test_tus_js_client_resumes_after_a_cut_connection(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    spawn: Spawn,
    node_modules: Path,
    tmp_path: Path,
    s3: Any,
    protocol: str,
    chunk: int,
) -> None:
    proxy = DropProxy(0, after=2 * SMALL_PART + 5000)
    gateway = await start_gateway({"server": {"public_url": proxy.url}})
    proxy.upstream_port = gateway.server.port or 0
    data = os.urandom(5 * SMALL_PART + 123)
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(data)
    async with proxy.running():
        source = await gateway.create_source(http)
        result = await tus_js(spawn, node_modules, source["upload_url"], path, protocol, chunk)
        assert await download(http, source) == data
    assert proxy.dropped == 1
    assert result["retries"] >= 1
    # Resumed, not started over: one upload created, its offset asked for after the cut.
    lines = gateway.access_lines()
    created = [x for x in lines if x["route"] != "/v1/sources" and x["status"] == 201]
    assert len(created) == 1
    assert any(x["method"] == "HEAD" and "/uploads/" in x["path"] for x in lines)
    assert result["url"].startswith(f"{proxy.url}/v1/sources/{source['id']}/uploads/")
    assert stored(s3, gateway, source) == data


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-03", "ietf-draft-05"])
async def test_tus_js_client_uploads_in_chunks(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    spawn: Spawn,
    node_modules: Path,
    tmp_path: Path,
    protocol: str,
) -> None:
    gateway = await start_gateway()
    data = os.urandom(3 * SMALL_PART + 77)
    path = tmp_path / "archive.tar.gz"
    path.write_bytes(data)
    source = await gateway.create_source(http)
    result = await tus_js(spawn, node_modules, source["upload_url"], path, protocol, 50_000)
    assert result["retries"] == 0
    assert await download(http, source) == data


async def test_tuspy_with_checksums(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    gateway = await start_gateway()
    data = os.urandom(2 * SMALL_PART + 999)
    source = await gateway.create_source(http)

    def upload() -> str | None:
        client = tus_client.TusClient(source["upload_url"])
        uploader = client.uploader(
            file_stream=io.BytesIO(data), chunk_size=40_000, upload_checksum=True
        )
        uploader.upload()
        return uploader.url

    url = await asyncio.to_thread(upload)
    assert url is not None and url.startswith(f"{gateway.url}/v1/sources/{source['id']}/uploads/")
    assert stored(s3, gateway, source) == data
