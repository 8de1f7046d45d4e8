"""The deployments WebSocket followed exactly as the platform's Go CLI follows it on the wire
(go-scalingo v11.3.0 ``DeploymentStream`` and the CLI 1.48.0 ``deployments.Stream``): only an
``Origin`` header, the auth frame sent without waiting for anything, frames decoded into the Go
structs' fields; the CLI's end (final status: 0 on success, 1 otherwise) and its failure on any
close or drop by the server. Then the stream's rules: several instances, one look at the bucket
per interval whatever the number of followers, limits and refusals."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from gateway.server import keys

from .helpers import TOKEN, Gateway, StartGateway

# The Go client's statuses that are not final (IsFinishedString).
UNFINISHED = {"queued", "building", "pushing", "starting"}
ORIGIN = {"Origin": "http://scalingo-cli.local/1"}


class ServerClosed(Exception):
    """The server closed or dropped the stream before the followed deployment's final status:
    the platform's CLI fails then (its reconnect branch is dead code)."""


def go_string(value: Any, name: str) -> str:
    """A Go ``string`` field: absent or null decodes to "", anything but a string is an error."""
    if value is None:
        return ""
    assert isinstance(value, str), f"{name}: cannot unmarshal {type(value).__name__} into string"
    return value


def go_deployment(value: Any) -> dict[str, Any]:
    """``scalingo.Deployment`` as Go decodes it; what the CLI dereferences must be there."""
    assert isinstance(value, dict)
    for name in ("id", "app_id", "status", "git_ref", "image", "postdeploy_hook"):
        go_string(value.get(name), name)
    created = value.get("created_at")
    if created is not None:  # *time.Time: RFC 3339
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    duration = value.get("duration")
    assert duration is None or (isinstance(duration, int) and not isinstance(duration, bool))
    pusher = value.get("pusher")
    assert isinstance(pusher, dict), "the CLI prints pusher.username without a nil check"
    for name in ("id", "username", "fullname", "email"):
        go_string(pusher.get(name), f"pusher.{name}")
    links = value.get("links")
    assert isinstance(links, dict) and isinstance(links["output"], str)
    return value


@dataclass
class Followed:
    """What the CLI printed while following, and how it ended."""

    exit_code: int
    news: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    pings: int = 0


async def follow_like_the_cli(url: str, token: str, deployment_id: str) -> Followed:
    """``scalingo deployment-follow``: dial with only Origin, write the auth frame, read."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, headers=ORIGIN, autoping=True) as ws,
    ):
        await ws.send_str(json.dumps({"type": "auth", "data": {"token": token}}))
        followed = Followed(exit_code=-1)
        while True:
            message = await asyncio.wait_for(ws.receive(), 60)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise ServerClosed(f"{message.type.name} {ws.close_code} before the final status")
            event = json.loads(message.data)
            kind = go_string(event.get("type"), "type")
            event_id = go_string(event.get("id"), "id")  # DeploymentEvent.ID is a string
            data = event.get("data")
            if kind == "ping":
                followed.pings += 1
            elif kind == "new":
                deployment = go_deployment(data["deployment"])
                if deployment["id"] == deployment_id:
                    followed.news.append(deployment)
            elif event_id != deployment_id:
                continue
            elif kind == "log":
                followed.logs.append(go_string(data.get("content"), "content").strip())
            elif kind == "status":
                # statusData's field is tagged "Status": Go matches it case-insensitively.
                status = go_string(data.get("status"), "status")
                followed.statuses.append(status)
                if status not in UNFINISHED:
                    followed.exit_code = 0 if status == "success" else 1
                    return followed


def stream_url(gateway: Gateway, app: str = "my-app") -> str:
    return f"ws://127.0.0.1:{gateway.server.port}/v1/apps/{app}/deployments/stream"


async def create_deployment(http: aiohttp.ClientSession, gateway: Gateway) -> dict[str, Any]:
    """A deployment of an uploaded source (its events are the test's to post): the deployment
    object and the job's events URL, read from the app's queue."""
    source = await gateway.uploaded_source(http, b"\x1f\x8b archive")
    body = {"deployment": {"git_ref": None, "source_url": source["download_url"]}}
    async with http.post(
        f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=gateway.auth
    ) as resp:
        assert resp.status == 201, await resp.text()
        deployment: dict[str, Any] = (await resp.json())["deployment"]
    return deployment


async def post_events(http: aiohttp.ClientSession, events_url: str, *events: Any) -> None:
    for event in events:
        async with http.post(events_url, json=event) as resp:
            assert resp.status == 200, await resp.text()


@pytest.fixture
async def deployer_gateway(
    start_gateway: StartGateway, moto_endpoint: str, queue_url: str
) -> Gateway:
    forward = {"type": "sqs", "queue": queue_url, "endpoint_url": moto_endpoint, "retries": 0}
    return await start_gateway({"deployments": {"forward": forward, "poll_interval": 0.2}})


def events_url(sqs: Any, queue_url: str) -> str:
    (message,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=5)["Messages"]
    url: str = json.loads(message["Body"])["events_url"]
    return url


async def test_the_cli_follows_a_deployment_finished_before_it_connected(
    demo_gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await demo_gateway.uploaded_source(http, b"\x1f\x8b not a tar archive")
    body = {"deployment": {"git_ref": None, "source_url": source["download_url"]}}
    async with http.post(
        f"{demo_gateway.url}/v1/apps/my-app/deployments", json=body, headers=demo_gateway.auth
    ) as resp:
        deployment = (await resp.json())["deployment"]
    show = f"{demo_gateway.url}/v1/apps/my-app/deployments/{deployment['id']}"
    for _ in range(100):
        async with http.get(show, headers=demo_gateway.auth) as resp:
            if (await resp.json())["deployment"]["finished_at"]:
                break
        await asyncio.sleep(0.1)
    followed = await follow_like_the_cli(stream_url(demo_gateway), TOKEN, deployment["id"])
    assert followed.exit_code == 1  # the stand-in deployer: not a tar archive, build-error
    assert followed.statuses == ["building", "build-error"]
    (new,) = followed.news
    assert new["pusher"]["username"] == "ci"
    assert followed.logs, "the deployer's reason"


async def test_the_cli_follows_every_status_as_a_deployer_drives_it(
    deployer_gateway: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    gateway = deployer_gateway
    # The CLI connects after creating the deployment, as it does.
    deployment = await create_deployment(http, gateway)
    url = events_url(sqs, queue_url)
    following = asyncio.create_task(
        follow_like_the_cli(stream_url(gateway), TOKEN, deployment["id"])
    )
    steps = ["building", "pushing", "starting", "success"]
    for number, status in enumerate(steps, 1):
        await asyncio.sleep(0.3)
        await post_events(
            http,
            url,
            {"id": 2 * number - 1, "type": "log", "content": f"step {number}\n"},
            {"id": 2 * number, "type": "status", "status": status},
        )
    followed = await asyncio.wait_for(following, 30)
    assert followed.exit_code == 0
    assert followed.statuses == steps
    assert followed.logs == ["step 1", "step 2", "step 3", "step 4"]
    assert [new["id"] for new in followed.news] == [deployment["id"]]


async def test_a_close_before_the_final_status_fails_the_cli(
    deployer_gateway: Gateway, http: aiohttp.ClientSession, sqs: Any, queue_url: str
) -> None:
    """A graceful shutdown sends what was found, then closes with 1001: the CLI (and so this
    test's client) treats it as a failure, which is why the server never closes otherwise."""
    gateway = deployer_gateway
    deployment = await create_deployment(http, gateway)
    url = events_url(sqs, queue_url)
    await post_events(http, url, {"id": 1, "type": "status", "status": "building"})
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(stream_url(gateway), headers=ORIGIN) as ws,
    ):
        await ws.send_str(json.dumps({"type": "auth", "data": {"token": TOKEN}}))
        first = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        assert first["type"] == "new"
        gateway.app[keys.ACTIVE_REQUESTS].draining = True
        kinds = []
        while (message := await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
            kinds.append(json.loads(message.data)["type"])
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1001
    with pytest.raises(ServerClosed):
        await follow_like_the_cli(stream_url(gateway), TOKEN, deployment["id"])
