"""The archive check on real uploads: refused archives leave nothing behind, good ones carry their
facts in the answer and on downloads; every case sent with a Content-Length and chunked."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import boto3
import pytest

from gateway.config import ConfigError, SourcesConfig, config_from_dict, load_config

from .archives import (
    Entry,
    app,
    bomb,
    directory,
    file,
    gz,
    hardlink,
    long_member,
    pax_member,
    raw_member,
    raw_tar,
    symlink,
    tar,
    tgz,
    zeros_and_noise,
)
from .helpers import (
    MOTO_CREDENTIALS,
    SMALL_PART,
    TOKEN,
    ServeGateway,
    StartGateway,
    config_dict,
    open_uploads,
    stored,
)
from .ports import free_port

EXAMPLE_ENV = {"GATEWAY_SECRET_KEY": "example-secret-0123456789"}

ENFORCE = {"sources": {"archive_check": "enforce", "max_entries": 50}}
MODES = [False, True]
MODE_IDS = ["length", "chunked"]


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def put(
    http: aiohttp.ClientSession, url: str, data: bytes | io.BytesIO, chunked: bool
) -> tuple[int, dict[str, Any]]:
    body = chunks_of(data) if chunked and isinstance(data, bytes) else data
    async with http.put(url, data=body) as resp:
        return resp.status, await resp.json()


def noisy(entries: list[Entry]) -> bytes:
    """``entries`` after a file of random bytes several parts long: refused after parts went."""
    return tgz([file("app/noise.bin", os.urandom(SMALL_PART * 3)), *entries])


def with_bad_crc(data: bytes) -> bytes:
    return data[:-8] + bytes([data[-8] ^ 1]) + data[-7:]


REFUSED: list[tuple[str, Callable[[], bytes], str]] = [
    ("text", lambda: b"print('not an archive')\n" * 100, "not gzip"),
    ("empty", lambda: b"", "not gzip"),
    ("bad crc", lambda: with_bad_crc(tgz(app())), "corrupt gzip stream"),
    ("truncated gzip", lambda: noisy(app())[:-100], "gzip stream cut short"),
    ("not tar", lambda: gz(os.urandom(SMALL_PART * 2)), "not a tar archive"),
    ("truncated tar", lambda: gz(tar(app())[:1200]), "cut short in entry 'app-1.2/README.md'"),
    ("garbage after the end", lambda: gz(tar(app()) + b"junk"), "data after the end of the tar"),
    ("absolute", lambda: noisy([file("/etc/cron.d/x")]), "entry '/etc/cron.d/x': absolute name"),
    ("dot dot", lambda: noisy([file("app/../../x")]), "entry 'app/../../x': name has a '..'"),
    ("control character", lambda: tgz([file("app/a\rb")]), "name contains a control character"),
    ("symlink out", lambda: noisy([symlink("app/l", "../../etc")]), "symbolic link 'app/l'"),
    ("hard link out", lambda: tgz([hardlink("app/h", "/etc/passwd")]), "hard link 'app/h'"),
    ("device", lambda: tgz([Entry("app/sda", tarfile.BLKTYPE)]), "'app/sda' is a block device"),
    ("fifo", lambda: tgz([Entry("app/p", tarfile.FIFOTYPE)]), "'app/p' is a FIFO"),
    ("entries", lambda: tgz([file(f"app/{i}") for i in range(51)]), "more than 50 entries"),
    ("bomb", lambda: bomb(64 * 1024 * 1024), "sources.max_inflated_bytes"),
    # Forms extractors read differently (tests/test_archive_extractors.py has them all).
    (
        "prefix under gnu magic",
        lambda: gz(raw_tar(raw_member(b"x", b"data", magic="gnu", prefix=b"../.."))),
        "extractors read its name differently",
    ),
    (
        "pax global path",
        lambda: gz(raw_tar(pax_member([(b"path", b"ok")], b"g"), raw_member(b"../../x", b"d"))),
        "PAX global header sets 'path'",
    ),
    (
        "long name and pax path differ",
        lambda: gz(
            raw_tar(long_member(b"../../x"), pax_member([(b"path", b"ok")]), raw_member(b"ok"))
        ),
        "PAX path and its GNU long name",
    ),
    (
        "negative size",
        lambda: gz(raw_tar(raw_member(b"a", size=b"-0001000\0\0\0\0"))),
        "bad size field",
    ),
    (
        "many links with long targets",
        lambda: gz(
            raw_tar(
                *[raw_member(b"l%d" % i, kind=b"2", link=b"t") for i in range(3)],
                pax_member([(b"linkpath", b"a/" * 2100)]),
                raw_member(b"l", kind=b"2"),
            )
        ),
        "target longer than 4096 bytes",
    ),
]


@pytest.mark.parametrize("chunked", MODES, ids=MODE_IDS)
@pytest.mark.parametrize(("build", "reason"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
async def test_refused_archives_leave_the_earlier_upload_intact(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    s3: Any,
    build: Callable[[], bytes],
    reason: str,
    chunked: bool,
) -> None:
    gateway = await start_gateway(
        {"sources": {**ENFORCE["sources"], "max_inflated_bytes": 16 * 1024 * 1024}}
    )
    source = await gateway.create_source(http)
    good = tgz(app())
    status, _ = await put(http, source["upload_url"], good, chunked)
    assert status == 200

    status, body = await put(http, source["upload_url"], build(), chunked)
    assert status == 422, body
    assert body["code"] == "archive_invalid"
    assert reason in body["error"]
    assert stored(s3, gateway, source) == good
    assert open_uploads(s3, gateway) == []


ACCEPTED: list[tuple[str, Callable[[], bytes], dict[str, Any]]] = [
    (
        "source tree",
        lambda: tgz(app()),
        {"entries": 5, "files": 2, "inflated_size": 10240, "root": "app-1.2/"},
    ),
    (
        "several parts long",
        lambda: tgz([directory("r"), file("r/noise", b"\x01" * 10 + os.urandom(SMALL_PART * 3))]),
        {"entries": 2, "files": 1, "root": "r/"},
    ),
    ("top level", lambda: tgz([file("a"), symlink("b", "a")]), {"entries": 2, "root": None}),
    ("gnu names", lambda: tgz(app("n" * 150 + "/"), tarfile.GNU_FORMAT), {"root": "n" * 150 + "/"}),
]


@pytest.mark.parametrize("chunked", MODES, ids=MODE_IDS)
@pytest.mark.parametrize(
    ("build", "facts"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
async def test_accepted_archives_carry_their_facts(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    build: Callable[[], bytes],
    facts: dict[str, Any],
    chunked: bool,
) -> None:
    gateway = await start_gateway(ENFORCE)
    source = await gateway.create_source(http)
    data = build()
    status, body = await put(http, source["upload_url"], data, chunked)
    assert status == 200, body
    assert {k: body["archive"][k] for k in facts} == facts
    assert set(body["archive"]) == {"entries", "files", "inflated_size", "root"}

    for method in ("HEAD", "GET"):
        async with http.request(method, source["download_url"]) as resp:
            assert resp.status == 200
            assert await resp.read() == (data if method == "GET" else b"")
            assert resp.headers["X-Archive-Entries"] == str(body["archive"]["entries"])
            assert resp.headers["X-Archive-Files"] == str(body["archive"]["files"])
            size = str(body["archive"]["inflated_size"])
            assert resp.headers["X-Archive-Inflated-Size"] == size
            assert resp.headers.get("X-Archive-Root") == body["archive"]["root"]
            assert "X-Archive-Problem" not in resp.headers


def test_the_defaults() -> None:
    sources = SourcesConfig()
    assert sources.archive_check == "enforce"
    assert sources.max_inflated_bytes == 4 * 1024**3
    assert sources.max_entries == 200_000
    example = load_config(Path(__file__).parent.parent / "config.example.yaml", env=EXAMPLE_ENV)
    assert example.sources == SourcesConfig()


@pytest.mark.parametrize("key", ["max_inflated_bytes", "max_entries"])
def test_limits_must_be_positive(moto_endpoint: str, key: str) -> None:
    data = config_dict(moto_endpoint, "bucket", 8080)
    data["sources"][key] = 0
    with pytest.raises(ConfigError, match=f"sources.{key}"):
        config_from_dict(data, env={})


async def test_a_root_that_is_not_plain_ascii_is_percent_encoded_in_its_header(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(ENFORCE)
    source = await gateway.create_source(http)
    status, body = await put(http, source["upload_url"], tgz([file("projet été/a")]), False)
    assert status == 200
    assert body["archive"]["root"] == "projet été/"
    async with http.head(source["download_url"]) as resp:
        assert resp.headers["X-Archive-Root"] == "projet%20%C3%A9t%C3%A9/"


@pytest.mark.parametrize("chunked", MODES, ids=MODE_IDS)
async def test_report_mode_stores_everything_and_says_why_it_would_refuse(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, chunked: bool
) -> None:
    gateway = await start_gateway({"sources": {"archive_check": "report"}})
    source = await gateway.create_source(http)
    data = tgz([file("app/a"), file("/etc/passwd")])
    status, body = await put(http, source["upload_url"], data, chunked)
    assert status == 200
    problem = "entry '/etc/passwd': absolute name"
    # Counted up to the problem, where the check stopped; no root is claimed.
    assert body["archive"] == {
        "entries": 2,
        "files": 1,
        "inflated_size": body["archive"]["inflated_size"],
        "root": None,
        "problem": problem,
    }
    assert stored(s3, gateway, source) == data
    async with http.get(source["download_url"]) as resp:
        assert resp.headers["X-Archive-Problem"] == problem
        assert resp.headers["X-Archive-Entries"] == "2"


@pytest.mark.parametrize("chunked", MODES, ids=MODE_IDS)
async def test_off_mode_stores_any_bytes_without_facts(
    start_gateway: StartGateway, http: aiohttp.ClientSession, chunked: bool
) -> None:
    gateway = await start_gateway({"sources": {"archive_check": "off"}})
    source = await gateway.create_source(http)
    status, body = await put(http, source["upload_url"], b"not an archive", chunked)
    assert status == 200 and "archive" not in body
    async with http.head(source["download_url"]) as resp:
        assert not [h for h in resp.headers if h.startswith("X-Archive-")]


async def raw_put(url: str, data: bytes, chunked: bool) -> tuple[bytes, int]:
    """PUT ``data`` slowly over a plain socket; stop sending once an answer arrives.
    Returns the answer's status line and how many body bytes were sent."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(data)}"
    head = f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n{framing}\r\n\r\n"
    writer.write(head.encode())
    answer = asyncio.ensure_future(reader.readline())
    sent = 0
    try:
        for start in range(0, len(data), 64 * 1024):
            if answer.done():
                break
            piece = data[start : start + 64 * 1024]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
            sent += len(piece)
            await asyncio.sleep(0.005)
        status = await asyncio.wait_for(answer, 10)
    finally:
        writer.close()
    return status, sent


@pytest.mark.parametrize("chunked", MODES, ids=MODE_IDS)
async def test_a_refused_archive_is_answered_before_its_body_ends(
    start_gateway: StartGateway, http: aiohttp.ClientSession, s3: Any, chunked: bool
) -> None:
    gateway = await start_gateway(
        {"sources": {"archive_check": "enforce", "max_size_bytes": 64 * 1024 * 1024}}
    )
    source = await gateway.create_source(http)
    data = gz(tar([file("/etc/passwd"), file("x", os.urandom(24 * 1024 * 1024))]))
    status, sent = await raw_put(source["upload_url"], data, chunked)
    assert status.startswith(b"HTTP/1.1 422")
    assert sent < len(data) // 2
    assert stored(s3, gateway, source) is None
    assert open_uploads(s3, gateway) == []


@contextlib.contextmanager
def s3_sink() -> Iterator[str]:
    """bench/s3sink.py in a process of its own: an S3 that takes bodies and throws them away."""
    port = free_port()
    sink = Path(__file__).parent.parent / "bench" / "s3sink.py"
    proc = subprocess.Popen([sys.executable, str(sink), "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "no sink"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_healthz_answers_while_a_100_mib_archive_is_checked(
    serve_gateway: ServeGateway, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    # 1 GiB of zeros (about 1 MiB compressed: one batch of the check is a long inflate) and
    # 99 MiB of noise. Were inflating on the event loop, /healthz would wait for it (seconds).
    # The gateway, S3 (the sink) and the client (curl) each run in a process of their own, so
    # this process only times the probes.
    archive = tmp_path / "big.tar.gz"
    archive.write_bytes(zeros_and_noise(1024, 99))
    with s3_sink() as sink:
        served = serve_gateway(
            {
                "sources": {"archive_check": "enforce", "max_size_bytes": 200 * 1024 * 1024},
                "storage": {"endpoint_url": sink},
            }
        )
        async with http.post(
            f"{served.url}/v1/sources", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp:
            source = await resp.json()
        async with http.get(f"{served.url}/healthz") as resp:  # the probe's connection is open
            assert resp.status == 200
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "-X",
            "PUT",
            "--upload-file",
            str(archive),
            source["upload_url"],
            stdout=asyncio.subprocess.PIPE,
        )
        answer = asyncio.ensure_future(curl.communicate())
        waits: list[float] = []
        while not answer.done():
            started = time.monotonic()
            async with http.get(f"{served.url}/healthz") as resp:
                assert resp.status == 200
            waits.append(time.monotonic() - started)
            await asyncio.sleep(0.02)
        body = json.loads((await answer)[0])
    assert body["archive"]["inflated_size"] > 1024**3, body
    assert len(waits) >= 5
    # The machine is shared with other test runs: a lone scheduling hiccup is not the event loop.
    waits.sort()
    assert waits[int(len(waits) * 0.95)] < 0.1 and waits[-1] < 1, waits[-5:]


async def test_a_deployment_of_an_own_source_carries_its_archive_facts(
    start_gateway: StartGateway, http: aiohttp.ClientSession, moto_endpoint: str
) -> None:
    sqs = boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    )
    queue = f"deploy-{uuid.uuid4().hex[:12]}"
    queue_url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    try:
        forward = {"type": "sqs", "queue": queue, "endpoint_url": moto_endpoint, "retries": 0}
        gateway = await start_gateway({**ENFORCE, "deployments": {"forward": forward}})
        source = await gateway.create_source(http)
        status, uploaded = await put(http, source["upload_url"], tgz(app()), False)
        assert status == 200
        body = {"deployment": {"git_ref": "v1", "download_url": source["download_url"]}}
        async with http.post(
            f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=gateway.auth
        ) as resp:
            assert resp.status == 201, await resp.text()
        (message,) = sqs.receive_message(QueueUrl=queue_url).get("Messages", [])
        assert json.loads(message["Body"])["archive"] == uploaded["archive"]
    finally:
        sqs.delete_queue(QueueUrl=queue_url)


async def test_the_openapi_document_describes_the_check(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    gateway = await start_gateway(ENFORCE)
    async with http.get(f"{gateway.url}/v1/openapi.json") as resp:
        doc = await resp.json()
    put_doc = doc["paths"]["/v1/sources/{id}"]["put"]
    refused = put_doc["responses"]["422"]["content"]["application/json"]["schema"]
    assert refused == {"$ref": "#/components/schemas/ArchiveInvalid"}
    facts = doc["components"]["schemas"]["ArchiveFacts"]
    assert set(facts["required"]) == {"entries", "files", "inflated_size", "root"}
    upload = doc["components"]["schemas"]["Upload"]["properties"]["archive"]
    assert upload == {"$ref": "#/components/schemas/ArchiveFacts"}
    for method in ("get", "head"):
        headers = doc["paths"]["/v1/sources/{id}"][method]["responses"]["200"]["headers"]
        assert {"X-Archive-Entries", "X-Archive-Inflated-Size", "X-Archive-Root"} <= set(headers)
    # A real answer has exactly the documented fields.
    source = await gateway.create_source(http)
    status, body = await put(http, source["upload_url"], tgz(app()), False)
    assert status == 200
    assert set(body["archive"]) <= set(facts["properties"])


async def test_archive_headers_are_exposed_to_browsers(
    start_gateway: StartGateway, http: aiohttp.ClientSession
) -> None:
    origin = "https://app.example"
    gateway = await start_gateway({**ENFORCE, "cors": {"allowed_origins": [origin]}})
    source = await gateway.create_source(http)
    await put(http, source["upload_url"], tgz(app()), False)
    async with http.get(source["download_url"], headers={"Origin": origin}) as resp:
        exposed = resp.headers["Access-Control-Expose-Headers"].split(", ")
    assert {"X-Archive-Entries", "X-Archive-Inflated-Size", "X-Archive-Root"} <= set(exposed)
