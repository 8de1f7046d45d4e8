"""Behind a real load balancer: Debian's nginx, with deploy/'s example config, before two gateways.

nginx comes from the distribution (`.ci/run` installs it; so does `make test` when run as root).
Without it these tests are skipped, with the reason in pytest's summary.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from gateway.server import keys

from .helpers import (
    TOKEN,
    Gateway,
    Spawn,
    StartGateway,
    sqs_forward,
    stop_process,
    uploaded_source,
)
from .ports import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "nginx" / "sources-gateway.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light, or run .ci/run)"
)
MiB = 1024 * 1024
# The client's own loopback address, other than nginx's: the one the access log must show.
CLIENT_ADDRESS = "127.0.0.2"
DEV_TOKEN = "dev-token"  # the README walk-through's token
T = TypeVar("T")
# How long an event may take to reach a follower through nginx: the gateway looks at the bucket
# every second (deployments.poll_interval); the rest is slack for a loaded machine. Through a
# buffering nginx an event would arrive only when the stream ends (and nginx 1.22, buffering,
# holds even the headers until the first bytes of the body: a keep-alive 15 s later).
EVENT_TIMEOUT = 10.0


@dataclass
class Balanced:
    url: str
    gateways: list[Gateway]
    access_log: Path
    error_log: Path

    def uploaded_bytes(self) -> float:
        """Upload body bytes all gateways have received so far."""
        total = 0.0
        for gateway in self.gateways:
            registry = gateway.app[keys.METRICS].registry
            total += registry.get_sample_value("gateway_upload_bytes_total") or 0.0
        return total

    def requests_served(self, gateway: Gateway) -> float:
        registry = gateway.app[keys.METRICS].registry
        families = registry.collect()
        return sum(
            s.value
            for f in families
            if f.name == "gateway_requests"
            for s in f.samples
            if s.name == "gateway_requests_total"
        )

    async def follower_instance(self) -> Gateway:
        """The gateway that serves the one open event stream (polling: its gauge moves once the
        stream's headers are out)."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            serving = [
                g
                for g in self.gateways
                if g.app[keys.METRICS].registry.get_sample_value(
                    "gateway_deployment_followers", {"transport": "sse"}
                )
            ]
            if serving:
                (gateway,) = serving
                return gateway
            assert time.monotonic() < deadline, "no gateway counts the event stream"
            await asyncio.sleep(0.05)


def render_example(port: int, upstreams: list[int], access_log: Path) -> str:
    """deploy/'s nginx example, its listen port, upstream servers and log path replaced."""
    text = EXAMPLE.read_text()
    replacements = {
        "listen 8080;": f"listen 127.0.0.1:{port};",
        "server 127.0.0.1:8081;": f"server 127.0.0.1:{upstreams[0]};",
        "server 127.0.0.1:8082;": f"server 127.0.0.1:{upstreams[1]};",
        "/var/log/nginx/sources-gateway.access.log": str(access_log),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the example no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def nginx_runner(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(port: int, upstreams: list[int]) -> tuple[Path, Path]:
        assert NGINX is not None
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        access_log, error_log = prefix / "access.log", prefix / "error.log"
        (prefix / "sources-gateway.conf").write_text(render_example(port, upstreams, access_log))
        temp = "\n".join(
            f"  {name}_temp_path {prefix / name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {error_log} info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n{temp}\n  include {prefix / 'sources-gateway.conf'};\n}}\n"
        )
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                errors = error_log.read_text() if error_log.exists() else ""
                raise AssertionError(f"nginx exited {proc.returncode}: {errors}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return access_log, error_log
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)

    try:
        yield start
    finally:
        for proc in procs:
            stop_process(proc, signal.SIGQUIT, 10)  # graceful: finish requests, then exit


@pytest.fixture
async def balanced(
    start_gateway: StartGateway, nginx_runner: Any, moto_endpoint: str, queue_url: str
) -> Balanced:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    overrides = {
        "server": {"public_url": url, "trusted_proxies": ["127.0.0.1/32"]},
        "auth": {
            "tokens": [
                {"name": "ci", "token": TOKEN, "apps": ["*"]},
                {"name": "dev", "token": DEV_TOKEN, "apps": ["*"]},
            ]
        },
        "sources": {
            "max_size_bytes": 314572800,
            "part_size_bytes": 8 * MiB,
            "allow_small_parts": False,
        },
        # Jobs go to a queue of this test's own (the test reads the deployer's events_url there).
        "deployments": sqs_forward(queue_url, moto_endpoint),
    }
    gateways = [await start_gateway(overrides), await start_gateway(overrides)]
    ports = [int(g.url.rsplit(":", 1)[1]) for g in gateways]
    access_log, error_log = await asyncio.to_thread(nginx_runner, port, ports)
    return Balanced(url, gateways, access_log, error_log)


def readme_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Walk-through with curl") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```", start)]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_readme_walkthrough_through_nginx(
    balanced: Balanced, tmp_path: Path, spawn: Spawn
) -> None:
    script = readme_walkthrough()
    assert "http://127.0.0.1:8080" in script
    script = script.replace("http://127.0.0.1:8080", balanced.url)
    work = tmp_path / "walkthrough"
    work.mkdir()
    shutil.copy(ROOT / "README.md", work / "README.md")
    proc = await spawn(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        cwd=work,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, output.decode()
    assert output.decode().rstrip().endswith("identical"), output.decode()
    source = json.loads((work / "source.json").read_text())
    assert source["upload_url"].startswith(f"{balanced.url}/v1/sources/")


async def paused_body(
    data: bytes, pause_at: int, paused: asyncio.Event, resume: asyncio.Event
) -> AsyncIterator[bytes]:
    for i in range(0, len(data), MiB):
        if i == pause_at:
            paused.set()
            await resume.wait()
        yield data[i : i + MiB]


async def upload_while_watching(
    http: aiohttp.ClientSession,
    url: str,
    data: bytes,
    *,
    chunked: bool,
    seen_by_store: Any,
) -> dict[str, Any]:
    """Upload ``data``, stopping 40 MiB in until ``seen_by_store()`` is true (or failing)."""
    paused, resume = asyncio.Event(), asyncio.Event()
    headers = {} if chunked else {"Content-Length": str(len(data))}
    body = paused_body(data, 40 * MiB, paused, resume)

    async def send() -> tuple[int, dict[str, Any]]:
        async with http.put(url, data=body, headers=headers) as resp:
            return resp.status, await resp.json()

    task = asyncio.create_task(send())
    try:
        await asyncio.wait_for(paused.wait(), 30)
        deadline = time.monotonic() + 20
        while not await seen_by_store():
            assert not task.done(), await task
            assert time.monotonic() < deadline, "the upload did not reach the store while paused"
            await asyncio.sleep(0.05)
    finally:
        resume.set()
    status, result = await asyncio.wait_for(task, 120)
    assert status == 200, result
    return result


async def test_100_mib_uploads_stream_through_and_download_with_ranges(
    balanced: Balanced, s3: Any
) -> None:
    bucket = balanced.gateways[0].config.storage.bucket
    data = os.urandom(100 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    connector = aiohttp.TCPConnector(local_addr=(CLIENT_ADDRESS, 0))
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        sources = []
        for _ in range(2):
            async with http.post(f"{balanced.url}/v1/sources", headers=auth) as resp:
                assert resp.status == 201
                sources.append(await resp.json())

        # Chunked: the multipart upload's first parts are in S3 before the client is done.
        key = f"sources/{sources[0]['id']}"

        async def parts_in_store() -> bool:
            uploads = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket, Prefix=key)
            for upload in uploads.get("Uploads", []):
                parts = await asyncio.to_thread(
                    s3.list_parts, Bucket=bucket, Key=key, UploadId=upload["UploadId"]
                )
                if parts.get("Parts"):
                    return True
            return False

        result = await upload_while_watching(
            http, sources[0]["upload_url"], data, chunked=True, seen_by_store=parts_in_store
        )
        assert result == {"id": sources[0]["id"], "size": len(data), "sha256": digest}

        # With a Content-Length: one streamed PUT; the gateways hold most of what was sent.
        before = balanced.uploaded_bytes()

        async def streamed_to_gateway() -> bool:
            return balanced.uploaded_bytes() - before >= 32 * MiB

        result = await upload_while_watching(
            http, sources[1]["upload_url"], data, chunked=False, seen_by_store=streamed_to_gateway
        )
        assert result["sha256"] == digest
        for source in sources:
            obj = await asyncio.to_thread(
                s3.get_object, Bucket=bucket, Key=f"sources/{source['id']}"
            )
            assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest

        url = sources[1]["download_url"]
        async with http.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["X-Checksum-Sha256"] == digest
            sha = hashlib.sha256()
            async for chunk in resp.content.iter_chunked(MiB):
                sha.update(chunk)
            assert sha.hexdigest() == digest
        async with http.get(url, headers={"Range": "bytes=1000-1999"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
            assert await resp.read() == data[1000:2000]
        async with http.get(url, headers={"Range": "bytes=-100"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[-100:]
        for past_end in (f"bytes={len(data)}-{len(data) + 10}", f"bytes={len(data)}-"):
            async with http.get(url, headers={"Range": past_end}) as resp:
                assert resp.status == 416, past_end
                assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
        async with http.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(data))
            request_id = resp.headers["X-Request-ID"]

    # Both instances took part: one service behind the balancer.
    assert all(balanced.requests_served(g) > 0 for g in balanced.gateways)
    # The gateways believed nginx (a trusted proxy) about who the client was.
    records = [line for g in balanced.gateways for line in g.access_lines()]
    puts = [r for r in records if r["method"] == "PUT"]
    assert len(puts) == 2
    assert {r["remote"] for r in records} == {CLIENT_ADDRESS}
    # nginx's log and the gateway's share the request id, and nginx logs no token either.
    await asyncio.sleep(0.2)
    nginx_lines = [json.loads(line) for line in balanced.access_log.read_text().splitlines()]
    head = [line for line in nginx_lines if line["method"] == "HEAD"]
    assert head[-1]["request_id"] == request_id
    assert head[-1]["remote"] == CLIENT_ADDRESS
    assert "token=" not in balanced.access_log.read_text()


async def test_nginx_refuses_oversized_bodies_in_json(balanced: Balanced) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(balanced.url.split(":")[-1]))
    try:
        writer.write(
            b"PUT /v1/sources/00000000-0000-4000-8000-000000000000?token=x HTTP/1.1\r\n"
            b"Host: gateway\r\nContent-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"application/json" in head
    assert json.loads(body) == {"error": "request body too large"}


async def in_time(step: Awaitable[T], what: str) -> T:
    """``step``'s result within ``EVENT_TIMEOUT``; past it the test fails naming ``what``."""
    try:
        return await asyncio.wait_for(step, EVENT_TIMEOUT)
    except TimeoutError:
        pytest.fail(f"{what}: nothing through nginx in {EVENT_TIMEOUT} s; is it buffering?")


async def next_event(stream: aiohttp.ClientResponse) -> dict[str, Any]:
    """The data of the next server-sent event on ``stream`` (comments skipped); fails if the
    stream ends first."""
    data = None
    while True:
        line = (await stream.content.readline()).decode()
        assert line, "the stream ended before the event"
        if line.startswith("data: "):
            data = json.loads(line[len("data: ") :])
        elif line == "\n" and data is not None:
            return data


async def test_deployment_events_reach_a_follower_through_nginx_as_they_happen(
    balanced: Balanced, sqs: Any, queue_url: str
) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # A browser's defaults (Accept-Encoding: gzip, decompressed as it comes), not the fixture's.
    async with aiohttp.ClientSession() as http:
        source = await uploaded_source(http, balanced.url, gzip.compress(b"app source"))
        body = {"deployment": {"source_url": source["download_url"]}}
        deployments = f"{balanced.url}/v1/apps/my-app/deployments"
        async with http.post(deployments, json=body, headers=auth) as resp:
            assert resp.status == 201, await resp.text()
            deployment = (await resp.json())["deployment"]
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        (job,) = [json.loads(m["Body"]) for m in messages]
        assert job["id"] == deployment["id"]

        url = f"{deployments}/{deployment['id']}/events"
        stream = await in_time(http.get(url, headers=auth), "the stream's headers")
        async with stream:
            assert stream.status == 200
            assert stream.headers["Content-Type"] == "text/event-stream"
            # The deployer reports to the other instance: each event reaches the follower
            # through the bucket, then through nginx.
            follower = await balanced.follower_instance()
            (deployer_side,) = [g for g in balanced.gateways if g is not follower]
            events_url = job["events_url"].replace(balanced.url, deployer_side.url)
            events = [
                {"id": 1, "type": "status", "status": "building"},
                {"id": 2, "type": "log", "content": "compiling\n"},
                {"id": 3, "type": "status", "status": "success"},
            ]
            for event in events:
                async with http.post(events_url, json=event) as resp:
                    assert resp.status == 200, await resp.text()
                # Received while the stream is open, before the next event is posted.
                received = await in_time(next_event(stream), f"event {event['id']}")
                assert {key: received[key] for key in event} == event
            # After a final status the gateway ends the stream, and nginx passes the end on.
            rest = await in_time(stream.content.read(), "the end of the stream")
            assert stream.content.at_eof()
        assert rest == b"", rest
