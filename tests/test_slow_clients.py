"""Slow clients cannot hold the server: headers have a deadline, a stalled download is given up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.server import keys
from gateway.server.inbound import GatewayRunner

from .helpers import ServeGateway, StartGateway
from .ports import free_port

HEADER_TIMEOUT = 0.5
# Comfortably past HEADER_TIMEOUT on a loaded machine, and far below aiohttp's own limits.
WAIT = 10.0


async def echo_length(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"length": len(body)})


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, int]]:
    """A small app behind ``GatewayRunner`` with a short header deadline."""
    app = web.Application()
    app.router.add_route("*", "/echo", echo_length)
    runner = GatewayRunner(app, header_timeout=HEADER_TIMEOUT, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), WAIT)


async def test_half_sent_headers_get_408_and_the_connection_closes(
    served: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.server")
    reader, writer = await asyncio.open_connection(*served)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    sent = time.monotonic()
    answer = await read_all(reader)  # returns once the server closes
    assert time.monotonic() - sent >= HEADER_TIMEOUT * 0.9  # not before the deadline
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"Content-Type: application/json" in head
    assert "request headers not received" in json.loads(body)["error"]
    assert any("request headers not received" in r.getMessage() for r in caplog.records)


async def test_a_silent_connection_is_closed_without_an_answer(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    assert await read_all(reader) == b""
    writer.close()


async def test_headers_sent_slowly_within_the_deadline_are_served(
    served: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    for piece in (b"GET /echo HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        writer.write(piece)
        await asyncio.sleep(HEADER_TIMEOUT / 10)
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_slow_body_is_not_cut_by_the_header_deadline(served: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*served)
    writer.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\n")
    for byte in (b"a", b"b", b"c", b"d"):
        await asyncio.sleep(HEADER_TIMEOUT)
        writer.write(byte)
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"length": 4}')


async def test_kept_alive_connection_each_request_has_the_deadline(
    served: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    first = await asyncio.wait_for(reader.readuntil(b'{"length": 0}'), WAIT)
    assert first.startswith(b"HTTP/1.1 200 ")
    # Idle between requests is the keep-alive timeout's business, not the header deadline's.
    await asyncio.sleep(HEADER_TIMEOUT * 3)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    second = await asyncio.wait_for(reader.readuntil(b'{"length": 0}'), WAIT)
    assert second.startswith(b"HTTP/1.1 200 ")
    # A third request that starts and stops: the deadline applies again.
    writer.write(b"GET /echo HTTP/1.1\r\nHo")
    third = await read_all(reader)
    writer.close()
    assert third.startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize(
    "first",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ],
    ids=["get", "content-length", "chunked"],
)
async def test_pipelined_request_started_in_the_same_segment_has_the_deadline(
    served: tuple[str, int], first: bytes
) -> None:
    """A complete request and the start of a second one in one segment, then silence: the first
    is answered, the second gets 408 once its headers are late (not aiohttp's keep-alive)."""
    reader, writer = await asyncio.open_connection(*served)
    writer.write(first + b"GET /echo HTTP/1.1\r\nHo")
    sent = time.monotonic()
    answer = await read_all(reader)
    writer.close()
    assert time.monotonic() - sent >= HEADER_TIMEOUT * 0.9
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 200 ") == 1
    assert b"HTTP/1.1 408 " in answer


@pytest.mark.parametrize(
    "segments",
    [
        [b"Content-Length: 4\r\n\r\nab", b"cdGET /echo HTTP/1.1\r\n"],
        [b"Transfer-Encoding: chunked\r\n\r\n4\r\nab", b"cd\r\n0\r\n\r\nGET /echo HTTP/1.1\r\n"],
        [b"Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r", b"\nGET /echo HTTP/1.1\r\n"],
    ],
    ids=["content-length", "chunked", "chunked-end-straddling"],
)
async def test_body_arriving_with_the_start_of_the_next_request_has_the_deadline(
    served: tuple[str, int], segments: list[bytes]
) -> None:
    reader, writer = await asyncio.open_connection(*served)
    writer.write(b"PUT /echo HTTP/1.1\r\nHost: x\r\n" + segments[0])
    await asyncio.sleep(HEADER_TIMEOUT / 5)
    writer.write(segments[1])
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'{"length": 4}HTTP/1.1 408 ' in answer


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["content-length", "chunked", "two-pipelined"],
)
async def test_complete_requests_leave_the_idle_connection_to_keep_alive(
    served: tuple[str, int], request_bytes: bytes
) -> None:
    """A segment that ends where a request ends starts no deadline: the connection idles."""
    reader, writer = await asyncio.open_connection(*served)
    writer.write(request_bytes)
    await asyncio.sleep(HEADER_TIMEOUT * 3)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await read_all(reader)
    writer.close()
    assert b"408" not in answer
    assert answer.endswith(b'{"length": 0}')


async def test_body_segments_reach_the_parser_whole(
    served: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the handler has taken its request, the rest of a body is fed to aiohttp's parser as
    it comes: only the segment that may end the request is split to find where it ends (each
    split copies the segment, a CPU cost on every byte of an upload)."""
    fed: list[int] = []
    feed = RequestHandler.data_received

    def counted(self: RequestHandler, data: bytes) -> None:
        fed.append(len(data))
        feed(self, data)

    monkeypatch.setattr(RequestHandler, "data_received", counted)
    segment, count = 16 * 1024, 8
    reader, writer = await asyncio.open_connection(*served)
    head = f"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {segment * count}\r\n"
    writer.write(head.encode() + b"Connection: close\r\n\r\n")
    for _ in range(count):
        await asyncio.sleep(0.05)  # the handler takes the request meanwhile, and waits for more
        writer.write(b"x" * segment)
    answer = await read_all(reader)
    writer.close()
    assert answer.endswith(b'{"length": %d}' % (segment * count))
    # Split apart: the last byte of the headers' segment (it might have ended a request) and
    # the body's last byte (fewer if segments arrived together); without the rule above, the
    # last byte of every segment.
    assert fed.count(1) <= 2


async def test_gateway_serve_applies_header_timeout(serve_gateway: ServeGateway) -> None:
    served = serve_gateway({"server": {"header_timeout": 1}})
    host, port = served.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = await read_all(reader)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    served.stop()
    warnings = [r for r in served.log_records() if r["level"] == "warning"]
    assert [r["message"] for r in warnings] == [
        "request headers not received within 1s from 127.0.0.1; connection closed"
    ]


# Larger than what the kernel buffers between a client that reads nothing and the server.
STALLED_DOWNLOAD_SIZE = 7 * 1024 * 1024


async def test_download_whose_client_stops_reading_is_given_up(
    start_gateway: StartGateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    gateway = await start_gateway({"server": {"send_timeout": 1}})
    source = await gateway.create_source(http)
    body = io.BytesIO(os.urandom(STALLED_DOWNLOAD_SIZE))
    async with http.put(source["upload_url"], data=body) as resp:
        assert resp.status == 200
    path = "/" + source["download_url"].split("/", 3)[3]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.server.port or 0))
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        await asyncio.get_running_loop().sock_sendall(sock, request)
        metrics = gateway.app[keys.METRICS]
        for _ in range(int(WAIT * 10)):
            if metrics.send_timeouts._value.get():
                break
            await asyncio.sleep(0.1)
    finally:
        sock.close()
    assert metrics.send_timeouts._value.get() == 1
    access = [r for r in gateway.access_lines() if r["method"] == "GET"]
    assert [(r["status"], r["outcome"]) for r in access] == [(200, "send_timeout")]
    assert any("given up: the client took nothing for 1s" in r.getMessage() for r in caplog.records)
    # The gateway goes on serving.
    async with http.get(source["download_url"], headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 206
