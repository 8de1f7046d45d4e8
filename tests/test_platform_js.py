"""The platform's npm client (``scalingo`` 0.14.6, pinned in tests/platform_clients/) run by Node,
unchanged, against the gateway with the local stand-in deployer: ``clientFromToken`` (the token
exchange), ``Deployments.create`` with a ``source_url``, ``Apps.deploymentListener`` (the
WebSocket stream) to ``success``, ``Deployments.logs``; and a listener opened after the deployment
finished, which still sees it to its final status from the replay."""

from __future__ import annotations

import asyncio
import io
import json
import os
import tarfile
from typing import Any

import aiohttp

from .helpers import PLATFORM_CLIENTS, TOKEN, Gateway, Spawn, npm_client_modules

DEMO_LINES = ("fetched the archive", "verified", "nothing deployed")


def app_archive() -> bytes:
    """A small tar.gz of an app, as a user would upload it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'print("hello")\n'
        info = tarfile.TarInfo("main.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def run_client(spawn: Spawn, gateway: Gateway, **env: str) -> list[dict[str, Any]]:
    """tests/platform_clients/follow.js with ``env``: every line it printed, parsed."""
    modules = npm_client_modules()
    proc = await spawn(
        "node",
        str(PLATFORM_CLIENTS / "follow.js"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "NODE_PATH": str(modules),
            "API_URL": gateway.url,
            "TOKEN": TOKEN,
            "APP": "my-app",
            **env,
        },
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
    lines = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, (lines, stderr.decode())
    return lines


def frames_of(lines: list[dict[str, Any]], deployment_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if "frame" in line and line["id"] == deployment_id]


async def test_the_npm_client_deploys_and_follows(
    demo_gateway: Gateway, http: aiohttp.ClientSession, spawn: Spawn
) -> None:
    source = await demo_gateway.uploaded_source(http, app_archive())
    lines = await run_client(spawn, demo_gateway, SOURCE_URL=source["download_url"])
    assert lines[0] == {"exchanged": True}  # clientFromToken got a JWT
    (created,) = [line["created"] for line in lines if "created" in line]
    assert created["status"] == "queued"
    assert created["source_url"] == source["download_url"]
    frames = frames_of(lines, created["id"])
    kinds = [frame["frame"] for frame in frames]
    assert kinds[0] == "new" and kinds[-1] == "status", kinds
    assert frames[0]["deployment"]["id"] == created["id"]
    assert frames[0]["deployment"]["pusher"]["username"] == "ci"
    statuses = [frame["status"] for frame in frames if frame["frame"] == "status"]
    assert statuses == ["building", "success"]
    logged = "".join(frame["content"] for frame in frames if frame["frame"] == "log")
    assert all(text in logged for text in DEMO_LINES), logged
    assert lines[-1] == {"done": "success"}
    (logs,) = [line["logs"] for line in lines if "logs" in line]
    assert logs == logged  # Deployments.logs: the output as text


async def test_a_listener_opened_after_the_end_sees_it_from_the_replay(
    demo_gateway: Gateway, http: aiohttp.ClientSession, spawn: Spawn
) -> None:
    source = await demo_gateway.uploaded_source(http, app_archive())
    body = {"deployment": {"source_url": source["download_url"]}}
    async with http.post(
        f"{demo_gateway.url}/v1/apps/my-app/deployments", json=body, headers=demo_gateway.auth
    ) as resp:
        assert resp.status == 201
        deployment_id = (await resp.json())["deployment"]["id"]
    url = f"{demo_gateway.url}/v1/apps/my-app/deployments/{deployment_id}"
    for _ in range(100):  # the stand-in deployer finishes within a second or two
        async with http.get(url, headers=demo_gateway.auth) as resp:
            if (await resp.json())["deployment"]["status"] == "success":
                break
        await asyncio.sleep(0.1)
    lines = await run_client(spawn, demo_gateway, DEPLOYMENT_ID=deployment_id)
    frames = frames_of(lines, deployment_id)
    assert frames[0]["frame"] == "new"
    assert [frame["status"] for frame in frames if frame["frame"] == "status"] == [
        "building",
        "success",
    ]
    assert lines[-1] == {"done": "success"}
