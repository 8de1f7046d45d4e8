"""The deployments WebSocket's rules and limits: followers on several instances, one look at the
bucket per interval whatever the number of followers and their transport, the auth frame's
refusals (1008), connections that never authenticate, ``max_streams`` and the pings."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from typing import Any

import aiohttp
import pytest

from gateway.server import keys
from gateway.server.http.deployments.websocket import DeploymentsStream

from .faultproxy import fault_proxy
from .helpers import LIMITED_TOKEN, TOKEN, Gateway, StartGateway

ORIGIN = {"Origin": "http://scalingo-cli.local/1"}


def stream_url(gateway: Gateway, app: str = "my-app") -> str:
    return f"ws://127.0.0.1:{gateway.server.port}/v1/apps/{app}/deployments/stream"


def deployer_config(moto_endpoint: str, queue_url: str, **deployments: Any) -> dict[str, Any]:
    forward = {"type": "sqs", "queue": queue_url, "endpoint_url": moto_endpoint, "retries": 0}
    return {"deployments": {"forward": forward, **deployments}}


async def deploy(
    http: aiohttp.ClientSession, gateway: Gateway, sqs: Any, queue: str, app: str = "my-app"
) -> Any:
    """A new deployment on ``gateway``: (its object, the job's events URL)."""
    source = await gateway.uploaded_source(http, b"\x1f\x8b archive")
    body = {"deployment": {"source_url": source["download_url"]}}
    async with http.post(
        f"{gateway.url}/v1/apps/{app}/deployments", json=body, headers=gateway.auth
    ) as resp:
        assert resp.status == 201
        deployment = (await resp.json())["deployment"]
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=5)["Messages"]
    return deployment, json.loads(message["Body"])["events_url"]


async def authenticated(session: aiohttp.ClientSession, url: str, token: str = TOKEN) -> Any:
    ws = await session.ws_connect(url, headers=ORIGIN)
    await ws.send_str(json.dumps({"type": "auth", "data": {"token": token}}))
    return ws


async def frames_until(ws: Any, done: Any, seconds: float = 20) -> list[dict[str, Any]]:
    """Frames read until ``done(frame)``."""
    seen = []
    async with asyncio.timeout(seconds):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, (message, ws.close_code)
            frame = json.loads(message.data)
            seen.append(frame)
            if done(frame):
                return seen


async def test_a_follower_sees_what_another_instance_receives(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    sqs: Any,
    http: aiohttp.ClientSession,
) -> None:
    config = deployer_config(moto_endpoint, queue_url, poll_interval=0.2)
    follower_side = await start_gateway(config)
    other = await start_gateway(config)
    ws = await authenticated(http, stream_url(follower_side))
    try:
        # Created on the other instance after the follower connected, events posted there too.
        deployment, events_url = await deploy(http, other, sqs, queue_url)
        for event in (
            {"id": 1, "type": "status", "status": "building"},
            {"id": 2, "type": "log", "content": "from the other instance"},
            {"id": 3, "type": "status", "status": "success"},
        ):
            async with http.post(events_url, json=event) as resp:
                assert resp.status == 200
        frames = await frames_until(ws, lambda f: f.get("data", {}).get("status") == "success")
    finally:
        await ws.close()
    mine = [f for f in frames if f.get("id") == deployment["id"]]
    assert [f["type"] for f in mine] == ["new", "status", "log", "status"]
    assert mine[2]["data"] == {"content": "from the other instance\n"}


async def test_fifty_followers_share_one_look_per_interval(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    sqs: Any,
    http: aiohttp.ClientSession,
) -> None:
    """25 WebSocket and 25 SSE followers of one deployment on one instance: the bucket is
    listed for its events about once per poll_interval, not fifty times."""
    interval = 0.5
    async with fault_proxy(moto_endpoint) as proxy:
        config = deployer_config(moto_endpoint, queue_url, poll_interval=interval)
        config["storage"] = {"endpoint_url": proxy.url}
        gateway = await start_gateway(config)
        deployment, _ = await deploy(http, gateway, sqs, queue_url)
        sockets = [await authenticated(http, stream_url(gateway)) for _ in range(25)]
        events = f"{gateway.url}/v1/apps/my-app/deployments/{deployment['id']}/events"
        streams = [await http.get(events, headers=gateway.auth) for _ in range(25)]
        try:
            await asyncio.sleep(1)  # every follower is in
            before = proxy.count("GET", deployment["id"])
            seconds = 4
            await asyncio.sleep(seconds)
            listings = proxy.count("GET", deployment["id"]) - before
        finally:
            for ws in sockets:
                await ws.close()
            for resp in streams:
                resp.close()
    assert 1 <= listings <= seconds / interval + 2, listings


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        ("not json at all", "not_json"),
        (json.dumps({"type": "auth", "data": {"token": "x" * (65 * 1024)}}), "too_large"),
        (json.dumps({"type": "subscribe", "data": {"token": TOKEN}}), "not_auth"),
        (json.dumps({"type": "auth", "data": {}}), "not_auth"),
        (json.dumps({"type": "auth", "data": {"token": "wrong-token-1234"}}), "bad_token"),
        (b"binary frame", "not_auth"),
    ],
)
async def test_a_bad_first_frame_closes_with_1008(
    gateway: Gateway, http: aiohttp.ClientSession, first: str | bytes, reason: str
) -> None:
    async with http.ws_connect(stream_url(gateway), headers=ORIGIN) as ws:
        if isinstance(first, bytes):
            await ws.send_bytes(first)
        else:
            await ws.send_str(first)
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 1008
    registry = gateway.app[keys.METRICS].registry
    assert registry.get_sample_value("gateway_stream_auth_failures_total", {"reason": reason}) == 1


async def test_another_apps_token_is_refused_alike_whether_or_not_it_has_deployments(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    sqs: Any,
    http: aiohttp.ClientSession,
) -> None:
    gateway = await start_gateway(deployer_config(moto_endpoint, queue_url))
    await deploy(http, gateway, sqs, queue_url)
    await deploy(http, gateway, sqs, queue_url, app="busy-app")  # empty-app has none
    # The limited token may follow my-app...
    async with http.ws_connect(stream_url(gateway, "my-app"), headers=ORIGIN) as ws:
        await ws.send_str(json.dumps({"type": "auth", "data": {"token": LIMITED_TOKEN}}))
        assert json.loads((await asyncio.wait_for(ws.receive(), 10)).data)["type"] == "new"
    # ...not another app, with or without deployments: the same refusal, nothing looked up.
    refusals = []
    for app, token in (("my-app", "not-a-token-1234"), ("other-app", LIMITED_TOKEN)):
        async with http.ws_connect(stream_url(gateway, app), headers=ORIGIN) as ws:
            await ws.send_str(json.dumps({"type": "auth", "data": {"token": token}}))
            message = await asyncio.wait_for(ws.receive(), 10)
            refusals.append((message.type, ws.close_code, message.extra))
    assert [r[:2] for r in refusals] == [(aiohttp.WSMsgType.CLOSE, 1008)] * 2
    assert refusals[0][2] == "invalid API token"
    assert refusals[1][2] == "token 'limited' may not deploy app 'other-app'"
    registry = gateway.app[keys.METRICS].registry
    assert (
        registry.get_sample_value("gateway_stream_auth_failures_total", {"reason": "forbidden"})
        == 1
    )


async def test_connections_that_never_authenticate_are_all_closed(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """1,000 handshakes and no auth frame: each is closed (1008) once the auth timeout has
    passed, and nothing of them stays (no stream counted, no feed kept)."""
    gateway = await start_gateway({"deployments": {"stream_auth_timeout": 2}})
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = await asyncio.gather(
            *(session.ws_connect(stream_url(gateway), headers=ORIGIN) for _ in range(1000))
        )
        stream = stream_handler(gateway)
        assert stream.open == 1000
        codes = await asyncio.gather(*(closed_code(ws) for ws in sockets))
    assert codes == [1008] * 1000
    assert stream.open == 0
    registry = gateway.app[keys.METRICS].registry
    assert (
        registry.get_sample_value("gateway_stream_auth_failures_total", {"reason": "timeout"})
        == 1000
    )
    assert (
        registry.get_sample_value("gateway_deployment_followers", {"transport": "websocket"}) == 0
    )


async def closed_code(ws: Any) -> int | None:
    message = await asyncio.wait_for(ws.receive(), 30)
    assert message.type == aiohttp.WSMsgType.CLOSE
    await ws.close()
    code: int | None = ws.close_code
    return code


def stream_handler(gateway: Gateway) -> DeploymentsStream:
    for route in gateway.app.router.routes():
        handler = getattr(route.handler, "__self__", None)
        if isinstance(handler, DeploymentsStream):
            return handler
    raise AssertionError("no deployments stream route")


async def test_past_max_streams_the_handshake_gets_503(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"deployments": {"max_streams": 2}})
    first = await authenticated(http, stream_url(gateway))
    second = await authenticated(http, stream_url(gateway))
    try:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(stream_url(gateway), headers=ORIGIN)
        assert refused.value.status == 503
    finally:
        await first.close()
        await second.close()
    await asyncio.sleep(0.2)
    third = await authenticated(http, stream_url(gateway))  # room again
    await third.close()


async def test_pings_every_15_seconds_on_a_quiet_stream(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    ws = await authenticated(http, stream_url(gateway))
    try:
        message = await asyncio.wait_for(ws.receive(), 20)
        frame = json.loads(message.data)
        assert frame["type"] == "ping"
        assert isinstance(frame["data"]["ts"], int)
    finally:
        await ws.close()


async def test_a_follower_that_reads_nothing_is_dropped_after_send_timeout(
    start_gateway: StartGateway,
    moto_endpoint: str,
    queue_url: str,
    sqs: Any,
    http: aiohttp.ClientSession,
) -> None:
    """A raw WebSocket client with a tiny receive window that authenticates and then reads
    nothing, while the replay has megabytes to send: dropped once ``server.send_timeout`` passed
    with nothing taken, so it holds no stream slot."""
    config = deployer_config(moto_endpoint, queue_url, max_output_bytes=64 * 1024 * 1024)
    config["server"] = {"send_timeout": 1}
    gateway = await start_gateway(config)
    _, events_url = await deploy(http, gateway, sqs, queue_url)
    line = "x" * 1000 + "\n"
    for number in range(1, 121):  # about 7 MiB of output: more than socket buffers hold
        async with http.post(
            events_url, json={"id": number, "type": "log", "content": line * 60}
        ) as resp:
            assert resp.status == 200
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/apps/my-app/deployments/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: http://scalingo-cli.local/1\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    writer.write(masked_text_frame(json.dumps({"type": "auth", "data": {"token": TOKEN}})))
    stream = stream_handler(gateway)
    try:
        for _ in range(150):  # up to 30 s, never reading a byte meanwhile
            if not stream.open:
                break
            await asyncio.sleep(0.2)
    finally:
        writer.close()
    assert stream.open == 0
    assert any(a.get("outcome") == "send_timeout" for a in gateway.access_lines())


def masked_text_frame(text: str) -> bytes:
    """One final text frame as a client sends it (masked; payload under 126 bytes)."""
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


async def test_the_exchanged_jwt_authenticates_the_stream_until_it_expires(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    basic = "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode()
    async with http.post(
        f"{gateway.url}/v1/tokens/exchange", headers={"Authorization": basic}
    ) as resp:
        jwt_token = (await resp.json())["token"]
    source = await gateway.uploaded_source(http, b"\x1f\x8b archive")
    body = {"deployment": {"source_url": source["download_url"]}}
    async with http.post(
        f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=gateway.auth
    ) as resp:
        deployment_id = (await resp.json())["deployment"]["id"]
    ws = await authenticated(http, stream_url(gateway), jwt_token)
    try:
        (new,) = await frames_until(ws, lambda frame: frame["type"] == "new")
        assert new["id"] == deployment_id
    finally:
        await ws.close()
    gateway.clock.advance(3600 + 10)
    async with http.ws_connect(stream_url(gateway), headers=ORIGIN) as ws:
        await ws.send_str(json.dumps({"type": "auth", "data": {"token": jwt_token}}))
        message = await asyncio.wait_for(ws.receive(), 10)
        assert (message.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 1008)
        assert "expired" in message.extra
