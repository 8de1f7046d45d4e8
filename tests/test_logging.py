"""The JSON access log: one line per request with its fields, and never a secret in any line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import random
import time
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import boto3
import pytest
from aiohttp import web

from gateway.redaction import redact
from gateway.server.observability.access import (
    FLUSH_INTERVAL,
    FLUSH_LINES,
    AccessLog,
    RequestTally,
    loggable_path,
)

from .helpers import (
    MOTO_CREDENTIALS,
    SECRET,
    TOKEN,
    Gateway,
    ServeGateway,
    StartGateway,
    create_source,
    raw_status_line,
    sqs_forward,
)

ACCESS_FIELDS = {
    "method",
    "path",
    "route",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "request_id",
    "remote",
}


async def test_one_line_per_request_with_its_fields(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    source = await gateway.create_source(http)
    (create,) = gateway.access_lines()
    data = os.urandom(3000)
    headers = {"X-Request-ID": "client-chosen.id-42"}
    async with http.put(source["upload_url"], data=data, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-ID"] == "client-chosen.id-42"
    async with http.get(source["download_url"]) as resp:
        await resp.read()
        download_id = resp.headers["X-Request-ID"]

    assert (create["method"], create["route"], create["status"]) == ("POST", "/v1/sources", 201)
    put, get = gateway.access_lines()[1:]
    assert set(put) >= ACCESS_FIELDS | {"time", "level", "logger", "message", "outcome"}
    assert (put["method"], put["status"], put["bytes_in"], put["request_id"]) == (
        "PUT",
        200,
        3000,
        "client-chosen.id-42",
    )
    assert put["path"] == f"/v1/sources/{source['id']}"
    assert put["route"] == "/v1/sources/{id}"
    assert put["remote"] == "127.0.0.1"
    assert put["outcome"] == "stored"
    assert put["duration_ms"] >= 0
    assert (put["level"], put["logger"]) == ("info", "gateway.access")
    assert put["message"] == f"PUT /v1/sources/{source['id']} 200"
    assert (get["method"], get["status"], get["bytes_out"]) == ("GET", 200, 3000)
    assert get["request_id"] == download_id
    assert get["outcome"] is None
    # The time as every other line has it (JsonFormatter): UTC, to the millisecond.
    stamp = datetime.fromisoformat(put["time"])
    assert put["time"].endswith("+00:00") and len(put["time"]) == len(
        "2026-11-23T06:21:13.963+00:00"
    )
    assert abs(stamp.timestamp() - time.time()) < 60


async def test_json_request_bodies_are_counted(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    body = b'{"note": "counted"}'
    headers = {**gateway.auth, "Content-Type": "application/json"}
    async with http.post(f"{gateway.url}/v1/sources", data=body, headers=headers) as resp:
        assert resp.status == 201
    async with http.post(f"{gateway.url}/v1/sources", headers=gateway.auth) as resp:
        assert resp.status == 201
    with_body, empty = gateway.access_lines()[-2:]
    assert with_body["bytes_in"] == len(body)
    assert empty["bytes_in"] == 0


async def test_unusable_request_id_is_replaced(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    forged = 'x" injected="1'
    async with http.get(f"{gateway.url}/healthz", headers={"X-Request-ID": forged}) as resp:
        given = resp.headers["X-Request-ID"]
    assert given != forged and len(given) == 32
    assert gateway.access_lines()[-1]["request_id"] == given


@pytest.mark.parametrize(
    ("trusted", "forwarded", "logged"),
    [
        ([], "198.51.100.7", "127.0.0.1"),  # not a trusted proxy: the header is ignored
        (["127.0.0.1/32"], "198.51.100.7", "198.51.100.7"),
        # The client forged a first hop; the proxy appended the address it saw.
        (["127.0.0.0/8"], "203.0.113.9, 198.51.100.7", "198.51.100.7"),
        (["127.0.0.0/8"], "198.51.100.7, 127.0.0.5", "198.51.100.7"),
        (["127.0.0.1/32"], "", "127.0.0.1"),
    ],
)
async def test_remote_address_from_trusted_proxies_only(
    start_gateway: StartGateway,
    http: aiohttp.ClientSession,
    trusted: list[str],
    forwarded: str,
    logged: str,
) -> None:
    gateway = await start_gateway({"server": {"trusted_proxies": trusted}})
    async with http.get(f"{gateway.url}/healthz", headers={"X-Forwarded-For": forwarded}):
        pass
    assert gateway.access_lines()[-1]["remote"] == logged


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/sources/abc", "/v1/sources/abc"),
        ("/v1/sources/abc?token=eyJpZCI6", "/v1/sources/abc[redacted]"),
        ("/v1/sources/abc;token=eyJpZCI6", "/v1/sources/abc[redacted]"),
        ("/x/TOKEN=eyJpZCI6/y", "/x/[redacted]"),
        ("/" + "a" * 300, "/" + "a" * 255 + "[...]"),
    ],
)
def test_loggable_path(path: str, logged: str) -> None:
    assert loggable_path(path) == logged


async def test_no_secret_in_any_log_line_of_a_full_flow(
    serve_gateway: ServeGateway, moto_endpoint: str
) -> None:
    """The real process at debug level: every line it writes is JSON and none holds a secret."""
    queue = f"deployments-{os.getpid()}"
    boto3.client(
        "sqs", endpoint_url=moto_endpoint, region_name="us-east-1", **MOTO_CREDENTIALS
    ).create_queue(QueueName=queue)
    served = serve_gateway(
        {
            "logging": {"level": "debug", "json": True},
            "deployments": sqs_forward(queue, moto_endpoint),
        }
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    secrets_seen: list[str] = []
    data = b"\x1f\x8b" + os.urandom(20_000)
    async with aiohttp.ClientSession() as http:
        source = await create_source(http, served.url)
        # HTTP Basic with the token as password, as `curl -u :$TOKEN` sends it.
        basic = {"Authorization": "Basic " + base64.b64encode(f":{TOKEN}".encode()).decode()}
        async with http.post(f"{served.url}/v1/sources", headers=basic, json={}) as resp:
            assert resp.status == 201
        for url in (source["upload_url"], source["download_url"]):
            secrets_seen.append(url.split("token=", 1)[1])
        async with http.put(source["upload_url"], data=data) as resp:
            assert resp.status == 200
        async with http.get(source["download_url"]) as resp:
            assert await resp.read() == data
        async with http.get(source["download_url"], headers={"Range": "bytes=0-1"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[:2]
        # Failures log too: a wrong-purpose token, an expired-looking garbage token, bad auth.
        async with http.get(source["upload_url"]) as resp:
            assert resp.status == 403
        async with http.post(
            f"{served.url}/v1/sources", headers={"Authorization": "Bearer wrong-token-xyz"}
        ) as resp:
            assert resp.status == 401
        # A request aiohttp refuses before any handler runs: it logs the raw request line.
        parts = urlsplit(source["download_url"])
        assert parts.hostname and parts.port
        request = f"GET {parts.path}?{parts.query}\x01x HTTP/1.1\r\nHost: x\r\n\r\n"
        status_line = await raw_status_line(parts.hostname, parts.port, request)
        assert status_line.split()[1] == b"400", status_line
        deployment = {"deployment": {"git_ref": "v1", "download_url": source["download_url"]}}
        async with http.post(
            f"{served.url}/v1/apps/my-app/deployments", json=deployment, headers=auth
        ) as resp:
            deploy_status = resp.status
            body = await resp.json()
    assert deploy_status == 201, body

    served.stop()
    assert served.proc.returncode == 0
    text = served.log_text()
    records = served.log_records()  # every line is JSON
    access = [r for r in records if r["logger"] == "gateway.access"]
    assert len(access) >= 8
    for record in access:
        assert set(record) >= ACCESS_FIELDS, record
        assert "?" not in record["path"]
    for needle in [*secrets_seen, SECRET, TOKEN, "wrong-token-xyz"]:
        assert needle not in text, needle
    assert "token=[redacted]" in text  # the malformed request's line was logged, masked


async def test_unparsable_request_is_one_warning_without_its_token(
    serve_gateway: ServeGateway,
) -> None:
    """A malformed request line whose token parameter is percent-encoded (``tok%65n`` is
    ``token`` to the server): logged once, as a warning without a traceback, token masked."""
    served = serve_gateway({"logging": {"level": "info", "json": True}})
    secret = "eyJpZCI6InNlY3JldC1zb3VyY2UifQ.aGVsbG8.c2VjcmV0LXNpZ25hdHVyZQ"
    host, port = served.url.removeprefix("http://").split(":")
    lines = [
        f"GET /v1/sources/x?tok%65n={secret}\x01x HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v1/sources/x?%74oken={secret}&a=1 HTTP/1.1\r\nBad Header\r\n\r\n",
    ]
    for line in lines:
        status_line = await raw_status_line(host, int(port), line)
        assert status_line.split()[1] == b"400", status_line
    served.stop()
    text = served.log_text()
    assert secret not in text
    assert secret[:20] not in text  # not even a part of it
    parse_errors = [r for r in served.log_records() if r["logger"] == "aiohttp.server"]
    assert len(parse_errors) == len(lines), parse_errors
    for record in parse_errors:
        assert record["level"] == "warning"
        assert "exception" not in record  # no traceback of aiohttp's parser
        assert record["message"].startswith("unparsable request from 127.0.0.1: 400 ")
    # The first one quotes the request line, its token masked.
    assert "tok%65n=[redacted]" in parse_errors[0]["message"]


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("GET /x?token=abc HTTP/1.1", "GET /x?token=[redacted] HTTP/1.1"),
        ("GET /x?tok%65n=abc HTTP/1.1", "GET /x?tok%65n=[redacted] HTTP/1.1"),
        ("/x?%74%6F%6B%65%6E=abc&a=1", "/x?%74%6F%6B%65%6E=[redacted]&a=1"),
        ("a=1;TOKEN=abc", "a=1;TOKEN=[redacted]"),
        ("next=/p?token=abc", "next=/p?token=[redacted]"),
        ("X-Amz-Signature=abc&X-Amz-Credential=AK/1&X-Amz-Date=2", None),
        ("X-Amz-Security-T%6Fken=abc", "X-Amz-Security-T%6Fken=[redacted]"),
        ("Authorization: Bearer abc", "Authorization: Bearer [redacted]"),
        ("id=12&size=3", "id=12&size=3"),
    ],
)
def test_redaction_judges_names_as_the_server_reads_them(text: str, redacted: str | None) -> None:
    if redacted is None:
        redacted = "X-Amz-Signature=[redacted]&X-Amz-Credential=[redacted]&X-Amz-Date=2"
    assert redact(text) == redacted


class _Request:
    """What the access log reads of a request."""

    def __init__(self, method: str, path: str) -> None:
        self.method = method
        self.path = path


def _record(access: AccessLog, path: str = "/v1/sources", **fields: Any) -> None:
    details = RequestTally("req-1", time.monotonic())
    for name, value in fields.items():
        setattr(details, name, value)
    request = cast(web.BaseRequest, _Request("POST", path))
    access.record(request, details, "/v1/sources", 201, 512, "198.51.100.7")


@pytest.mark.parametrize(
    "path",
    ["/v1/sources", '/x/"quoted"\\back', "/caf\u00e9/\u2603", "/tab\there/\x01", "/a?token=abc"],
)
def test_an_access_line_is_what_json_dumps_writes_for_its_fields(path: str) -> None:
    """Formatted without json's encoder, the line is nevertheless json.dumps of its fields in
    the logging formatter's key order and spacing, whatever the path holds."""
    out = io.StringIO()
    access = AccessLog(enabled=True, as_json=True, stream=lambda: out, clock=lambda: 1764000000.25)
    _record(access, path, bytes_in=7, outcome="stored")
    access.flush()
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    fields = json.loads(line)
    assert line == json.dumps(fields) + "\n"
    assert list(fields) == [
        "time", "level", "logger", "message", "method", "path", "route", "status",
        "bytes_in", "bytes_out", "duration_ms", "request_id", "remote", "outcome",
    ]  # fmt: skip
    assert fields["time"] == "2025-11-24T16:00:00.250+00:00"
    assert fields["path"] == loggable_path(path)
    assert fields["message"] == f"POST {loggable_path(path)} 201"
    assert "token=abc" not in line
    assert (fields["bytes_in"], fields["bytes_out"], fields["outcome"]) == (7, 512, "stored")


def test_plain_text_access_lines_read_like_the_other_plain_lines() -> None:
    out = io.StringIO()
    access = AccessLog(enabled=True, as_json=False, stream=lambda: out, clock=lambda: 1764000000.25)
    _record(access)
    access.flush()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1764000000))
    assert out.getvalue() == f"{stamp},250 INFO gateway.access POST /v1/sources 201\n"


def test_access_lines_wait_for_a_batch_but_not_long() -> None:
    out = io.StringIO()
    access = AccessLog(enabled=True, as_json=True, stream=lambda: out)

    async def requests() -> None:
        _record(access)
        assert out.getvalue() == ""  # buffered...
        await asyncio.sleep(FLUSH_INTERVAL * 3)
        assert out.getvalue().count("\n") == 1  # ...and written by the timer
        for _ in range(FLUSH_LINES - 1):
            _record(access)
        assert out.getvalue().count("\n") == 1
        _record(access)  # a full batch is written at once
        assert out.getvalue().count("\n") == 1 + FLUSH_LINES

    asyncio.run(requests())


def test_a_broken_log_stream_does_not_stop_the_access_log() -> None:
    closed, out = io.StringIO(), io.StringIO()
    closed.close()  # writing to it raises ValueError, as a closed pipe raises OSError
    streams = [closed, out]
    access = AccessLog(enabled=True, as_json=True, stream=lambda: streams[0])
    _record(access)
    access.flush()  # no exception: the batch is dropped
    streams.pop(0)
    _record(access)
    access.flush()
    assert out.getvalue().count("\n") == 1


async def test_no_access_lines_at_level_warning(start_gateway: StartGateway) -> None:
    gateway = await start_gateway({"logging": {"level": "warning"}})
    async with aiohttp.ClientSession() as http:
        await gateway.create_source(http)
    assert gateway.access_lines() == []


def test_access_line_times_are_what_the_other_lines_would_say() -> None:
    """To the millisecond as JsonFormatter (datetime) and logging's plain format write them."""
    rng = random.Random(7)
    stamps = [rng.uniform(1.7e9, 1.8e9) for _ in range(5000)] + [1764000000.9999996]
    json_out, text_out = io.StringIO(), io.StringIO()
    now = iter(stamps * 2)
    as_json = AccessLog(
        enabled=True, as_json=True, stream=lambda: json_out, clock=lambda: next(now)
    )
    as_text = AccessLog(
        enabled=True, as_json=False, stream=lambda: text_out, clock=lambda: next(now)
    )
    for _ in stamps:
        _record(as_json)
    for _ in stamps:
        _record(as_text)
    as_json.flush()
    as_text.flush()
    plain = logging.Formatter("%(asctime)s")
    for stamp, line, text in zip(
        stamps, json_out.getvalue().splitlines(), text_out.getvalue().splitlines(), strict=True
    ):
        expected = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
        assert json.loads(line)["time"] == expected
        record = logging.makeLogRecord({"created": stamp, "msecs": _msecs(stamp)})
        assert text.startswith(plain.format(record) + " INFO gateway.access ")


def _msecs(created: float) -> float:
    # What LogRecord.__init__ computes from its creation time (makeLogRecord keeps the real one).
    return int((created - int(created)) * 1000) + 0.0


def test_lines_recorded_after_close_are_written_at_once() -> None:
    out = io.StringIO()
    access = AccessLog(enabled=True, as_json=True, stream=lambda: out)

    async def stopping() -> None:
        _record(access)
        access.close()  # the server stops: what is buffered goes out...
        assert out.getvalue().count("\n") == 1
        _record(access)  # ...and a request that ends later (cancelled) needs no timer
        assert out.getvalue().count("\n") == 2

    asyncio.run(stopping())


@pytest.mark.parametrize("archive_check", ["off", "enforce"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_an_aborted_upload_is_a_499_access_line_and_nothing_else(
    serve_gateway: ServeGateway, chunked: bool, archive_check: str
) -> None:
    """The client vanishes mid-body: its access line says 499, and no error or traceback is
    logged (a client going away is not a server error)."""
    served = serve_gateway(
        {"logging": {"level": "info", "json": True}, "sources": {"archive_check": archive_check}}
    )
    async with aiohttp.ClientSession() as http:
        source = await create_source(http, served.url)
    parts = urlsplit(source["upload_url"])
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    sent = os.urandom(256 * 1024)
    head = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(sent) * 4}"
    writer.write(f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n".encode())
    writer.write(f"{len(sent):x}\r\n".encode() + sent + b"\r\n" if chunked else sent)
    await writer.drain()
    await asyncio.sleep(0.5)  # the gateway is reading the body
    writer.transport.abort()  # the client vanishes mid-body
    await asyncio.sleep(0.5)  # the gateway notices
    served.stop()
    records = served.log_records()
    puts = [r for r in records if r["logger"] == "gateway.access" and r["method"] == "PUT"]
    assert [(r["status"], r.get("outcome")) for r in puts] == [(499, "client_disconnected")]
    loud = [r for r in records if r["level"] not in ("debug", "info")]
    assert loud == [], json.dumps(loud, indent=1)
    assert not any("exception" in r or "Traceback" in r["message"] for r in records)


async def test_a_configured_secret_is_masked_even_unlabelled(serve_gateway: ServeGateway) -> None:
    """A header line that is nothing but the API token (no ``Bearer``, no ``token=`` to tell it
    by): aiohttp's parse error quotes the line, and the configured token is masked all the same."""
    served = serve_gateway({"logging": {"level": "info", "json": True}})
    host, port = served.url.removeprefix("http://").split(":")
    request = f"GET /v1/sources HTTP/1.1\r\nHost: x\r\n{TOKEN}\r\n\r\n"
    status_line = await raw_status_line(host, int(port), request)
    assert status_line.split()[1] == b"400", status_line
    served.stop()
    (warning,) = [r for r in served.log_records() if r["logger"] == "aiohttp.server"]
    assert "[redacted]" in warning["message"], warning  # the line was quoted, and masked
    assert TOKEN not in served.log_text()
