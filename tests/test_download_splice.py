"""Downloads relayed with ``splice(2)`` (``sources.download_splice``, on by default): taken when
both the client's and S3's connections are plain TCP, byte-exact, ranges included, the client's
connection kept alive; the piece-by-piece copy when switched off or when the client talks TLS;
and the same failures as the copy: S3 breaking off or going silent cuts the client short (logged
as a failed upstream, counted, never a 500), a client that reads nothing is given up after
``server.send_timeout``, a client that goes away is its own outcome."""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import config_from_dict
from gateway.server import keys
from gateway.server.app import create_app

from .faultproxy import Fault, FaultProxy, fault_proxy
from .helpers import Gateway, StartGateway, config_dict, uploaded_source
from .ports import free_port

pytestmark = pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux's")

# Larger than what one piece, the pipe and the sockets' buffers hold: most of it is spliced.
SIZE = 6 * 1024 * 1024
HANG_GUARD_SECONDS = 60
MAX_SIZE = 8 * 1024 * 1024  # the tests' sources.max_size_bytes


def relays(gateway: Gateway) -> dict[str, float]:
    """``gateway_download_relays_total`` by relay."""
    metrics = gateway.app[keys.METRICS]
    return {
        relay: metrics.download_relays.labels(relay)._value.get() for relay in ("splice", "copy")
    }


def s3_errors(gateway: Gateway) -> float:
    return float(gateway.app[keys.METRICS].s3_errors.labels("GetObject")._value.get())


def downloads(gateway: Gateway) -> list[tuple[int, str | None, int]]:
    return [
        (line["status"], line.get("outcome"), line["bytes_out"])
        for line in gateway.access_lines()
        if line["method"] == "GET"
    ]


async def test_download_is_spliced_byte_exact_with_ranges(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway()
    data = os.urandom(SIZE)
    source = await gateway.uploaded_source(http, data)
    url = source["download_url"]
    async with http.get(url) as resp:
        assert resp.status == 200
        assert await resp.read() == data
    ranges = [(0, SIZE - 1), (1, SIZE - 2), (SIZE // 3, SIZE // 3 + 100_000), (SIZE - 7, SIZE - 1)]
    for start, end in ranges:
        async with http.get(url, headers={"Range": f"bytes={start}-{end}"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[start : end + 1]
    assert relays(gateway)["splice"] >= 1  # small ranges arrive whole: nothing left to splice
    assert relays(gateway)["splice"] + relays(gateway)["copy"] == 1 + len(ranges)
    sizes = [SIZE] + [end - start + 1 for start, end in ranges]
    assert downloads(gateway) == [(200, None, SIZE)] + [(206, None, n) for n in sizes[1:]]
    metrics = gateway.app[keys.METRICS]
    assert metrics.bytes_downloaded._value.get() == sum(sizes)


async def test_spliced_download_leaves_the_connection_usable(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    """Two downloads on one connection: the second request is answered after the first body."""
    gateway = await start_gateway()
    data = os.urandom(SIZE)
    source = await gateway.uploaded_source(http, data)
    path = "/" + source["download_url"].split("/", 3)[3]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        for _ in range(2):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200 ")
                assert f"Content-Length: {SIZE}\r\n".encode() in head
                assert b"Connection: close" not in head
                assert await reader.readexactly(SIZE) == data
    finally:
        writer.close()
    assert relays(gateway) == {"splice": 2, "copy": 0}


async def test_switched_off_the_download_is_copied(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway({"sources": {"download_splice": False}})
    data = os.urandom(SIZE)
    source = await gateway.uploaded_source(http, data)
    async with http.get(source["download_url"]) as resp:
        assert await resp.read() == data
    assert relays(gateway) == {"splice": 0, "copy": 1}


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


async def test_a_tls_client_gets_the_copy(
    aiohttp_server: Any, moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    """Bytes spliced into a TLS connection's socket would bypass the encryption."""
    port = free_port()
    data = config_dict(moto_endpoint, bucket, port)
    data["server"]["public_url"] = f"https://127.0.0.1:{port}"
    config = config_from_dict(data, env={})
    app = create_app(config, access_stream=lambda: io.StringIO())
    await aiohttp_server(app, port=port, ssl=self_signed(tmp_path))
    body = os.urandom(SIZE)
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector) as https:
        source = await uploaded_source(https, f"https://127.0.0.1:{port}", body)
        async with https.get(source["download_url"]) as resp:
            assert resp.status == 200
            assert await resp.read() == body
    metrics = app[keys.METRICS]
    assert metrics.download_relays.labels("copy")._value.get() == 1
    assert metrics.download_relays.labels("splice")._value.get() == 0


@pytest.fixture
async def proxy(moto_endpoint: str) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(moto_endpoint) as p:
        yield p


async def test_a_store_ignoring_the_range_gets_the_copy(
    start_gateway: StartGateway, http: aiohttp.ClientSession, proxy: FaultProxy
) -> None:
    """S3 answering a range with the whole object: the rest is not what the client was promised,
    so it is not spliced (the copy stops at the range's length)."""
    gateway = await start_gateway({"storage": {"endpoint_url": proxy.url}})
    data = os.urandom(SIZE)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault("ignore_range", method="GET", path=source["id"], exclude_query="tagging"))
    async with http.get(source["download_url"], headers={"Range": "bytes=0-999999"}) as resp:
        assert resp.status == 206
        assert await resp.read() == data[:1_000_000]
    assert relays(gateway) == {"splice": 0, "copy": 1}
    assert proxy.count("GET", "") - proxy.count("GET", "tagging") == 1  # the fault did fire:
    assert ("GET", f"/{gateway.config.storage.bucket}/sources/{source['id']}", "ignore_range") in (
        proxy.requests
    )


# Each failure is also run with the copy: both relays must end the same way.
RELAYS = pytest.mark.parametrize("relay", ["splice", "copy"])


def switched(relay: str) -> dict[str, Any]:
    return {"download_splice": relay == "splice"}


def taken(relay: str) -> dict[str, int]:
    return {"splice": int(relay == "splice"), "copy": int(relay == "copy")}


@RELAYS
@pytest.mark.parametrize("action", ["truncate", "stall_body"])
async def test_s3_breaking_off_cuts_the_download_short(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    proxy: FaultProxy,
    action: Any,
    relay: str,
) -> None:
    storage = {"endpoint_url": proxy.url, "max_attempts": 1, "read_timeout": 1.5}
    gateway = await start_gateway({"storage": storage, "sources": switched(relay)})
    data = os.urandom(SIZE)
    source = await gateway.uploaded_source(http, data)
    proxy.add(Fault(action, method="GET", path=source["id"], exclude_query="tagging", times=9))

    received = b""
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(source["download_url"]) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_any():
                    received += chunk
    assert 0 < len(received) < len(data)
    assert data.startswith(received)
    assert relays(gateway) == taken(relay)
    assert s3_errors(gateway) == 1
    assert downloads(gateway) == [(200, "upstream_failed", len(received))]


@RELAYS
async def test_client_reading_nothing_is_given_up(
    start_gateway: StartGateway, http: aiohttp.ClientSession, relay: str
) -> None:
    gateway = await start_gateway({"server": {"send_timeout": 1}, "sources": switched(relay)})
    source = await gateway.uploaded_source(http, os.urandom(MAX_SIZE))
    path = "/" + source["download_url"].split("/", 3)[3]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", gateway.server.port or 0))
    metrics = gateway.app[keys.METRICS]
    try:
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        for _ in range(HANG_GUARD_SECONDS * 10):
            if metrics.send_timeouts._value.get():
                break
            await asyncio.sleep(0.1)
    finally:
        sock.close()
    assert relays(gateway) == taken(relay)
    assert [line[:2] for line in downloads(gateway)] == [(200, "send_timeout")]
    async with http.get(source["download_url"], headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 206  # the gateway goes on serving


@RELAYS
async def test_client_going_away_is_its_own_outcome(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    relay: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await start_gateway({"sources": switched(relay)})
    source = await gateway.uploaded_source(http, os.urandom(MAX_SIZE))
    path = "/" + source["download_url"].split("/", 3)[3]
    # A small receive window, set before connecting: loopback's autotuning (up to 32 MiB here)
    # would otherwise take the whole body into the kernel before the reset, and the relay would
    # rightly end as sent.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.server.port or 0))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await reader.readexactly(1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.close()  # with linger 0: a reset, as a client that crashed
    for _ in range(HANG_GUARD_SECONDS * 10):
        if downloads(gateway):
            break
        await asyncio.sleep(0.1)
    (status, outcome, sent) = downloads(gateway)[0]
    # Whichever comes first: the relay's write failing, or the test server cancelling the handler
    # of a closed connection (aiohttp's test server does, `gateway serve` does not).
    assert (status, outcome) in {(200, "client_disconnected"), (503, "cancelled")}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert 1024 * 1024 <= sent < MAX_SIZE
    assert relays(gateway) == taken(relay)
    assert s3_errors(gateway) == 0
