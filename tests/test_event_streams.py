"""What reading and following a deployment costs, and how a stream ends: real gateways whose S3
traffic goes through the fault proxy (tests/faultproxy.py), which counts every request."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.config import StorageConfig
from gateway.server.adapters.deployments.event_log import EventLogStore
from gateway.server.adapters.deployments.records import RecordStore, bounded
from gateway.server.adapters.json_objects import S3JsonObjects
from gateway.server.adapters.outbound import Connections
from gateway.server.domain.deployments.event_log import CHUNK_EVENTS, next_entry
from gateway.server.domain.deployments.records import Event, new_record
from gateway.server.domain.deployments.tracker import DeploymentTracker

from .faultproxy import Fault, FaultProxy, fault_proxy
from .helpers import MOTO_CREDENTIALS, TOKEN, Gateway, ServeGateway, StartGateway

APP = "my-app"
NOW = "2026-01-01T00:00:00Z"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "deployments/"


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(moto_endpoint) as p:
        yield p


@pytest.fixture
async def direct(moto_endpoint: str, bucket: str) -> AsyncIterator[DeploymentTracker]:
    """A tracker on the test bucket that bypasses the proxy: for setting deployments up."""
    storage = StorageConfig(
        bucket=bucket,
        endpoint_url=moto_endpoint,
        access_key_id=MOTO_CREDENTIALS["aws_access_key_id"],
        secret_access_key=MOTO_CREDENTIALS["aws_secret_access_key"],
    )
    connections = Connections(storage)
    async with connections.open():
        objects = S3JsonObjects(connections, bucket)
        yield DeploymentTracker(
            RecordStore(objects, PREFIX), EventLogStore(objects, PREFIX, CHUNK_EVENTS), 1 << 30
        )


async def proxied_gateway(
    start_gateway: StartGateway, proxy: FaultProxy, **deployments: Any
) -> Gateway:
    return await start_gateway(
        {
            "storage": {"endpoint_url": proxy.url, "read_timeout": 2},
            "server": {"send_timeout": 1},
            "deployments": {"poll_interval": 0.1, **deployments},
        }
    )


async def new_deployment(direct: DeploymentTracker) -> str:
    deployment_id = str(uuid.uuid4())
    record = new_record(deployment_id, APP, NOW, None, "https://x.example/a.tgz", None, "ci")
    await direct.create(record, 1.0)
    return deployment_id


async def write_log(direct: DeploymentTracker, deployment_id: str, contents: list[str]) -> None:
    """Log events 1..n with ``contents``, written as the gateway writes them (slots and full
    chunks), but all at once: taking 1,200 events one by one would make a slow test."""
    entries: list[dict[str, Any]] = []
    for number, content in enumerate(contents, start=1):
        event = Event(number, "log", content=content)
        entries.append(next_entry(entries[-1] if entries else None, event, NOW, 1 << 30))
    log = direct.events
    await bounded(log.put_entry(APP, deployment_id, entry) for entry in entries)
    await bounded(
        log.compact(APP, deployment_id, chunk) for chunk in range(len(entries) // CHUNK_EVENTS)
    )


def address(gateway: Gateway) -> tuple[str, int]:
    host, port = gateway.url.removeprefix("http://").split(":")
    return host, int(port)


def events_url(gateway: Gateway, deployment_id: str, tail: str) -> str:
    return f"{gateway.url}/v1/apps/{APP}/deployments/{deployment_id}{tail}"


async def test_the_output_of_1200_events_takes_a_bounded_number_of_requests(
    start_gateway: StartGateway, proxy: FaultProxy, direct: DeploymentTracker, http: Any
) -> None:
    gateway = await proxied_gateway(start_gateway, proxy)
    deployment_id = await new_deployment(direct)
    await write_log(direct, deployment_id, [f"line {n}" for n in range(1, 1201)])
    proxy.requests.clear()

    async with http.get(events_url(gateway, deployment_id, "/output"), headers=AUTH) as resp:
        assert resp.status == 200
        text = await resp.text()

    assert text.splitlines() == [f"line {n}" for n in range(1, 1201)]
    # The record, three listings (the log's first 1,000 keys, the chunks, the log after the
    # last chunk), twelve chunks: not one read per event.
    # (Only this deployment's: the readiness check looks at the bucket now and then.)
    mine = [r for r in proxy.requests if deployment_id in r[1]]
    assert len(mine) <= 16, mine
    assert len([r for r in mine if "list-type=2" in r[1]]) == 3

    # The replay at the start of a stream reads the same way.
    proxy.requests.clear()
    async with http.get(events_url(gateway, deployment_id, "/events"), headers=AUTH) as resp:
        seen = 0
        async for line in resp.content:
            seen += line.startswith(b"id: ")
            if seen == 1200:
                break
    assert len([r for r in proxy.requests if "/chunks/" in r[1]]) == 12
    assert len([r for r in proxy.requests if "/log/0" in r[1]]) == 0


async def test_compaction_happens_as_events_come(
    direct: DeploymentTracker, s3: Any, bucket: str
) -> None:
    deployment_id = await new_deployment(direct)
    for number in range(1, CHUNK_EVENTS + 6):
        await direct.add_event(APP, deployment_id, Event(number, "log", content=f"{number}"), NOW)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=PREFIX)
    chunks = [o["Key"] for o in listed["Contents"] if "/chunks/" in o["Key"]]
    assert chunks == [f"{PREFIX}{APP}/{deployment_id}/chunks/000000.json"]
    output = await direct.output(APP, deployment_id)
    assert output.splitlines() == [str(n) for n in range(1, CHUNK_EVENTS + 6)]


async def raw_follow(host: str, port: int, deployment_id: str, **socket_options: int) -> Any:
    """Open a connection, send the event stream's GET; the reader and writer."""
    sock = socket.socket()
    for option, value in socket_options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, option), value)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    reader, writer = await asyncio.open_connection(sock=sock)
    path = f"/v1/apps/{APP}/deployments/{deployment_id}/events"
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def test_an_s3_outage_mid_stream_closes_the_connection(
    start_gateway: StartGateway, proxy: FaultProxy, direct: DeploymentTracker
) -> None:
    gateway = await proxied_gateway(start_gateway, proxy)
    deployment_id = await new_deployment(direct)
    await write_log(direct, deployment_id, ["compiling"])
    reader, writer = await raw_follow(*address(gateway), deployment_id)
    try:
        received = await asyncio.wait_for(reader.readuntil(b"compiling"), 10)
        proxy.add(Fault("503", method="GET", times=10_000))  # the bucket is gone
        received += await asyncio.wait_for(reader.read(), 10)  # to EOF: the gateway closed
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.count(b"HTTP/1.1") == 1  # no second status line inside the body
    assert not received.endswith(b"0\r\n\r\n")  # cut short, not a finished chunked body
    await asyncio.sleep(0.2)
    (line,) = [a for a in gateway.access_lines() if a["route"].endswith("/events")]
    assert (line["status"], line["outcome"]) == (200, "upstream_failed")


async def test_followers_that_left_cost_no_more_requests(
    serve_gateway: ServeGateway, proxy: FaultProxy, direct: DeploymentTracker
) -> None:
    """Ten followers of a deployment with nothing to send yet (so nothing is written to them
    after the headers) close their connections once the headers came: none of them looks at
    the bucket again. In ``gateway serve``: the tests' in-process server cancels the handler of
    a connection that closed (aiohttp's test server runs with handler_cancellation), production
    does not."""
    overrides = {
        "storage": {"endpoint_url": proxy.url, "read_timeout": 2},
        "deployments": {"poll_interval": 0.1},
    }
    served = await asyncio.to_thread(serve_gateway, overrides)
    deployment_id = await new_deployment(direct)
    host, port = served.url.removeprefix("http://").split(":")
    for _ in range(10):
        reader, writer = await raw_follow(host, int(port), deployment_id)
        assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 200 OK\r\n"
        writer.close()
    await asyncio.sleep(1.0)  # ten polls' worth
    proxy.requests.clear()
    await asyncio.sleep(1.0)
    assert [r for r in proxy.requests if deployment_id in r[1]] == []


async def test_a_follower_that_reads_nothing_is_dropped(
    start_gateway: StartGateway,
    proxy: FaultProxy,
    direct: DeploymentTracker,
    http: aiohttp.ClientSession,
) -> None:
    """server.send_timeout (1 s here) applies to event streams: a follower that takes nothing,
    its socket buffers full of 8 MB of output, is dropped; the stream ends for it."""
    gateway = await proxied_gateway(start_gateway, proxy, max_output_bytes=16 * 1024 * 1024)
    deployment_id = await new_deployment(direct)
    await write_log(direct, deployment_id, ["x" * 60_000] * 140)
    reader, writer = await raw_follow(*address(gateway), deployment_id, SO_RCVBUF=4096)
    try:
        await asyncio.wait_for(reader.readline(), 10)  # the status line: then it reads no more
        for _ in range(150):  # 30 s at most
            if any(a["outcome"] == "send_timeout" for a in gateway.access_lines()):
                break
            await asyncio.sleep(0.2)
        else:
            pytest.fail("the follower that reads nothing was never dropped")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    async with http.get(f"{gateway.url}/metrics") as resp:
        assert 'gateway_deployment_followers{transport="sse"} 0.0' in await resp.text()
