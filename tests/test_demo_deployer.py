"""The local stand-in deployer: what it reads from an archive and what it reports, over HTTP."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import tarfile
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.server.adapters.deployments.demo_deployer import (
    BuildFailed,
    DemoDeployer,
    Reporter,
    list_archive,
)


def tar_gz(names: list[str]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as archive:
        for name in names:
            if name.endswith("/"):
                info = tarfile.TarInfo(name.rstrip("/"))
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                data = b"content of " + name.encode()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return raw.getvalue()


@pytest.mark.parametrize(
    ("names", "entries", "files", "root"),
    [
        (["app-1.2/", "app-1.2/a.py", "app-1.2/lib/b.py"], 3, 2, "app-1.2/"),
        (["a.py", "b.py"], 2, 2, None),
        (["only.py"], 1, 1, None),
        (["src/a.py", "README"], 2, 2, None),
    ],
)
def test_list_archive(names: list[str], entries: int, files: int, root: str | None) -> None:
    listing = list_archive(io.BytesIO(tar_gz(names)))
    assert (listing.entries, listing.files, listing.root) == (entries, files, root)


@pytest.mark.parametrize(
    "data", [b"plain text, not gzip", gzip.compress(b"gzip but not tar" * 100), b""]
)
def test_list_archive_refuses_what_is_not_a_tar_gz(data: bytes) -> None:
    with pytest.raises(BuildFailed):
        list_archive(io.BytesIO(data))


class FakeWorld:
    """Serves one archive and records the events posted to the events URL."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.events: list[dict[str, Any]] = []

    async def get_archive(self, request: web.Request) -> web.Response:
        return web.Response(body=self.archive, content_type="application/gzip")

    async def post_event(self, request: web.Request) -> web.Response:
        assert request.query["token"] == "secret-events-token"
        event = await request.json()
        self.events.append(event)
        return web.json_response({"id": event["id"]})


async def run_job(aiohttp_server: Any, archive: bytes, sha256: str | None) -> FakeWorld:
    world = FakeWorld(archive)
    app = web.Application()
    app.router.add_get("/archive", world.get_archive)
    app.router.add_post("/events", world.post_event)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    job = {
        "id": "d-1",
        "app": "my-app",
        "fetch_url": f"{base}/archive",
        "sha256": sha256,
        "events_url": f"{base}/events?token=secret-events-token",
    }
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        await DemoDeployer(None, "queue", http).handle(json.dumps(job))
    return world


def summary(world: FakeWorld) -> list[str]:
    return [e.get("status") or e["content"] for e in world.events]


async def test_a_good_archive_succeeds(aiohttp_server: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    archive = tar_gz(["app/", "app/main.py"])
    world = await run_job(aiohttp_server, archive, hashlib.sha256(archive).hexdigest())
    assert [e["id"] for e in world.events] == list(range(1, len(world.events) + 1))
    lines = summary(world)
    assert lines[0] == "building"
    assert lines[-1] == "success"
    assert any("verified" in line for line in lines)
    assert "root directory: app/" in lines
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("gateway")]
    assert ours
    assert not [line for line in ours if "secret-events-token" in line]


async def test_a_wrong_checksum_is_a_build_error(aiohttp_server: Any) -> None:
    world = await run_job(aiohttp_server, tar_gz(["a.py"]), "0" * 64)
    lines = summary(world)
    assert lines[-1] == "build-error"
    assert "sha256 mismatch" in lines[-2]


async def test_not_a_tar_gz_is_a_build_error(aiohttp_server: Any) -> None:
    world = await run_job(aiohttp_server, b"not an archive", None)
    lines = summary(world)
    assert lines[-1] == "build-error"
    assert "not a readable tar.gz" in lines[-2]


@pytest.mark.parametrize(
    ("answers", "posted"),
    [([503, 200], [1, 1, 2]), ([502, 503, 500], [1, 1, 1, 2]), ([400], [1, 2]), ([200], [1, 2])],
)
async def test_an_event_is_sent_again_after_a_5xx_only_and_at_most_three_times(
    aiohttp_server: Any, answers: list[int], posted: list[int]
) -> None:
    """The reporter's retry policy: a 5xx is tried again (3 attempts in all), a 4xx is not;
    either way the next event goes on with the next number."""
    seen: list[int] = []
    first = list(answers)

    async def post_event(request: web.Request) -> web.Response:
        seen.append((await request.json())["id"])
        return web.json_response({}, status=first.pop(0) if first else 200)

    app = web.Application()
    app.router.add_post("/events", post_event)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as http:
        reporter = Reporter(http, f"http://127.0.0.1:{server.port}/events")
        await reporter.status("building")
        await reporter.line("next")
    assert seen == posted
