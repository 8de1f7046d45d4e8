"""Odd bytes in requests: every one gets a clear 4xx, never a 500, and nothing is stored.

The specific cases each once gave a 500; the property-based test then throws arbitrary header
bytes at every route over a raw socket (aiohttp's client refuses to send most of them) and
finds no 5xx.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import hypothesis
import pytest
from hypothesis import strategies as st

from .helpers import (
    DEPLOYMENTS_QUEUE,
    TOKEN,
    Gateway,
    ServeGateway,
    StartGateway,
    moto_client,
    stored,
)

RAW_TIMEOUT = 15.0


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _read_head(sock: socket.socket, buf: bytes) -> tuple[int, dict[str, str], bytes]:
    """The next answer's status and headers (interim 1xx answers skipped), and what follows."""
    while True:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed without an answer: {buf!r}")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        if not 100 <= status < 200:
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            return status, headers, buf


def exchange(url: str, request: bytes) -> RawAnswer:
    """Send ``request`` as is on a new connection and read one answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=RAW_TIMEOUT) as sock:
        sock.sendall(request)
        status, headers, body = _read_head(sock, b"")
        if request.startswith(b"HEAD ") or status in (204, 304):
            return RawAnswer(status, headers, b"")
        length = int(headers.get("content-length", "-1"))
        while length < 0 or len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return RawAnswer(status, headers, body if length < 0 else body[:length])


async def send_raw(gateway: Gateway, request: bytes) -> RawAnswer:
    # Blocking socket code in a thread: the gateway answers on this test's event loop.
    return await asyncio.to_thread(exchange, gateway.url, request)


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# --- the cases that each gave a 500 -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["Bearer tök".encode(), "Basic tök".encode(), b"Basic \xff\xfe", b"Bearer \x80abc", b"\xff"],
)
async def test_non_ascii_authorization_is_401(gateway: Gateway, value: bytes) -> None:
    answer = await send_raw(
        gateway, request_bytes("POST", "/v1/sources", [(b"Authorization", value)])
    )
    assert answer.status == 401
    assert answer.json() == {"error": "invalid API token"} or "error" in answer.json()
    assert answer.headers["www-authenticate"].startswith("Bearer")


DEEP_ARRAY = b"[" * 1000 + b"]" * 1000
DEEP_OBJECT = b'{"a":' * 1000 + b"1" + b"}" * 1000


@pytest.mark.parametrize(
    "body",
    [
        DEEP_ARRAY,
        DEEP_OBJECT,
        b'{"deployment":' + DEEP_ARRAY + b"}",
        # Deep enough to refuse, shallow enough for any interpreter's parser: the same answer on
        # every Python version.
        b'{"a":' * 40 + b"1" + b"}" * 40,
    ],
)
@pytest.mark.parametrize("path", ["/v1/sources", "/v1/apps/my-app/deployments"])
async def test_deeply_nested_json_is_400(gateway: Gateway, path: str, body: bytes) -> None:
    headers = [
        (b"Authorization", f"Bearer {TOKEN}".encode()),
        (b"Content-Type", b"application/json"),
    ]
    answer = await send_raw(gateway, request_bytes("POST", path, headers, body))
    assert answer.status == 400, answer
    assert answer.json() == {"error": "request body is nested too deeply", "code": "invalid_json"}


async def test_json_body_arriving_in_pieces_is_read_whole(gateway: Gateway) -> None:
    """A body in several TCP segments: what arrived first is not taken for all of it."""
    body = json.dumps({"padding": "x" * 30_000}).encode()
    head = request_bytes(
        "POST",
        "/v1/sources",
        [(b"Authorization", f"Bearer {TOKEN}".encode()), (b"Content-Type", b"application/json")],
        body,
    )[: -len(body)]
    reader, writer = await asyncio.open_connection(*gateway.url.removeprefix("http://").split(":"))
    writer.write(head + body[:1000])
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler starts reading with only the first piece there
    writer.write(body[1000:])
    answer = await asyncio.wait_for(reader.read(), RAW_TIMEOUT)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]


@pytest.fixture
async def uploaded(gateway: Gateway, http: aiohttp.ClientSession) -> dict[str, Any]:
    source = await gateway.create_source(http)
    async with http.put(source["upload_url"], data=b"\x1f\x8b" + b"x" * 998) as resp:
        assert resp.status == 200
    return source


@pytest.mark.parametrize(
    ("range_value", "statuses"),
    [
        ("bytes=" + "9" * 5000 + "-", {416}),  # starts past the end
        ("bytes=0-" + "9" * 5000, {206}),  # ends past the end: up to the last byte
        ("bytes=-" + "9" * 5000, {206}),  # a suffix longer than the object: all of it
        ("bytes=" + "1" * 4000 + "-" + "2" * 4000, {416}),
        ("bytes=" + "0" * 5000 + "1-2", {206}),  # leading zeros: still 1-2
    ],
)
async def test_range_with_thousands_of_digits(
    gateway: Gateway, uploaded: dict[str, Any], range_value: str, statuses: set[int]
) -> None:
    headers = [(b"Range", range_value.encode())]
    answer = await send_raw(
        gateway, request_bytes("GET", path_of(uploaded["download_url"]), headers)
    )
    assert answer.status in statuses, answer
    if answer.status == 206:
        assert answer.headers["content-range"].endswith("/1000")


@pytest.mark.parametrize(
    "content_type",
    ["tëxt/html".encode(), b"application/gzip; x=\xff", b"\xc3\xa4/x", b"a b/c", b"gzip"],
)
async def test_non_ascii_content_type_on_upload_is_400_and_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any, content_type: bytes
) -> None:
    source = await gateway.create_source(http)
    headers = [(b"Content-Type", content_type)]
    answer = await send_raw(
        gateway, request_bytes("PUT", path_of(source["upload_url"]), headers, b"abc")
    )
    assert answer.status == 400, answer
    assert answer.json()["code"] == "invalid_content_type"
    assert stored(s3, gateway, source) is None


@pytest.mark.parametrize("value", [b"102-processing", b"\x80", "100-contïnue".encode()])
@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/v1/sources", "/v1/sources"),
        ("GET", "/healthz", "/healthz"),
        ("POST", "/v1/apps/my-app/deployments", "/v1/apps/{app}/deployments"),
        ("GET", "/no/such/path", "unmatched"),
    ],
)
async def test_unknown_expectation_is_a_json_417_with_an_access_line(
    gateway: Gateway,
    method: str,
    path: str,
    route: str,
    value: bytes,
) -> None:
    answer = await send_raw(gateway, request_bytes(method, path, [(b"Expect", value)]))
    assert answer.status == 417
    assert answer.headers["content-type"].startswith("application/json")
    assert "Expect" in answer.json()["error"]
    assert "x-request-id" in answer.headers
    lines = gateway.access_lines()
    assert [(r["method"], r["status"], r["route"]) for r in lines] == [(method, 417, route)]
    assert lines[0]["request_id"] == answer.headers["x-request-id"]


async def test_every_route_answers_an_unknown_expectation_with_json(
    gateway: Gateway, uploaded: dict[str, Any]
) -> None:
    """Routes added later too: each needs the expect handler that defers to the middlewares."""
    routes = sorted(set(concrete_routes(gateway, uploaded)))
    for method, target in routes:
        answer = await send_raw(gateway, request_bytes(method, target, [(b"Expect", b"\x80")]))
        assert answer.status == 417, (method, target, answer)
        assert answer.headers["content-type"].startswith("application/json"), (method, target)


async def test_expect_100_continue_still_works_everywhere(gateway: Gateway) -> None:
    headers = [(b"Expect", b"100-continue"), (b"Authorization", f"Bearer {TOKEN}".encode())]
    answer = await send_raw(gateway, request_bytes("POST", "/v1/sources", headers))
    assert answer.status == 201
    answer = await send_raw(gateway, request_bytes("GET", "/no/such/path", headers))
    assert answer.status == 404


async def test_unknown_expectation_on_upload_stores_nothing(
    gateway: Gateway, http: aiohttp.ClientSession, s3: Any
) -> None:
    source = await gateway.create_source(http)
    headers = [(b"Expect", b"200-ok")]
    answer = await send_raw(
        gateway, request_bytes("PUT", path_of(source["upload_url"]), headers, b"abc")
    )
    assert answer.status == 417
    assert stored(s3, gateway, source) is None


# --- arbitrary header bytes at every route ------------------------------------------------------

# Header names the gateway reads, so the bytes reach its code and not only aiohttp's parser.
READ_HEADERS = [
    b"Authorization",
    b"Content-Type",
    b"Range",
    b"If-Range",
    b"If-None-Match",
    b"Content-MD5",
    b"Expect",
    b"X-Request-ID",
    b"X-Forwarded-For",
    b"Origin",
    b"Access-Control-Request-Method",
    b"Last-Event-ID",
    b"Accept",
    b"Accept-Encoding",
]
# Anything but CR and LF (which end a header line) and NUL-free tokens for names.
header_values = st.one_of(
    st.binary(max_size=64).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.text(max_size=32).map(lambda t: t.replace("\r", "").replace("\n", "").encode()),
    st.sampled_from([b"Bearer " + TOKEN.encode(), b"bytes=0-1", b"9" * 5000, b"100-continue"]),
)
header_names = st.one_of(
    st.sampled_from(READ_HEADERS),
    st.binary(min_size=1, max_size=16).filter(lambda b: re.fullmatch(rb"[!-9;-~]+", b) is not None),
)
header_lists = st.lists(st.tuples(header_names, header_values), max_size=6)


def concrete_routes(
    gateway: Gateway, source: dict[str, Any], job: dict[str, Any] | None = None
) -> Iterator[tuple[str, str]]:
    """(method, target) for every route the gateway serves, with a live source where one fits
    and, given a deployment's ``job``, that deployment (and its events token) for the others."""
    deployment_id = job["id"] if job else "0b7e7a3c-6c0b-4a7e-9f1e-3f1f0e6f4c11"
    for route in gateway.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        template = info.get("path") or info.get("formatter")
        if template is None or route.method == "*":
            continue
        if "{id" in template and template.startswith("/v1/sources/"):
            target = path_of(source["download_url" if route.method != "PUT" else "upload_url"])
        elif job and route.method == "POST" and template.endswith("/events"):
            target = path_of(job["events_url"])
        else:
            target = re.sub(r"\{app[^}]*\}", "my-app", template)
            target = re.sub(r"\{[^}]*\}", deployment_id, target)
        yield route.method, target


def small_tar_gz() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        data = b"print('hello')\n"
        entry = tarfile.TarInfo("app/main.py")
        entry.size = len(data)
        archive.addfile(entry, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
async def checking_gateway(start_gateway: StartGateway) -> Gateway:
    """A gateway that checks archives as they stream, as the default configuration does."""
    return await start_gateway({"sources": {"archive_check": "enforce"}})


UNPARSABLE_SECRET = "eyJ0b2tlbiI6InNlY3JldCJ9.c2VjcmV0LWJlYXJlcg"


@pytest.mark.parametrize(
    "bad_line",
    [
        f"Authorization : Bearer {UNPARSABLE_SECRET}".encode(),  # space before the colon
        f"Authorization: Bearer {UNPARSABLE_SECRET}\x01".encode(),  # a control character
        f"Authorization: Bearer {UNPARSABLE_SECRET}{'a' * 9000}".encode(),  # too long
        f"Bearer {UNPARSABLE_SECRET}".encode(),  # no colon at all
    ],
    ids=["space-before-colon", "control-char", "too-long", "no-colon"],
)
async def test_unparsable_header_is_a_json_400_that_echoes_nothing(
    serve_gateway: ServeGateway, bad_line: bytes
) -> None:
    """aiohttp's own 400 quotes the offending line, a bearer token included: ours is JSON."""
    served = serve_gateway({"logging": {"level": "info", "json": True}})
    request = (
        b"POST /v1/sources HTTP/1.1\r\nHost: gateway\r\n"
        + bad_line
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    answer = await asyncio.to_thread(exchange, served.url, request)
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["code"] == "bad_request"
    assert body["error"].startswith("malformed request") or "too long" in body["error"]
    assert UNPARSABLE_SECRET[:12] not in answer.body.decode("latin-1")
    assert "x-request-id" in answer.headers
    served.stop()
    assert UNPARSABLE_SECRET[:12] not in served.log_text()


async def deployed(
    gateway: Gateway, http: aiohttp.ClientSession, sqs: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A source holding a real tar.gz, deployed to my-app: the source and the deployment's job."""
    source = await gateway.uploaded_source(http, small_tar_gz())
    body = {"deployment": {"source_url": source["download_url"]}}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.post(
        f"{gateway.url}/v1/apps/my-app/deployments", json=body, headers=headers
    ) as resp:
        assert resp.status == 201, await resp.text()
        deployment_id = (await resp.json())["deployment"]["id"]
    queue = sqs.get_queue_url(QueueName=DEPLOYMENTS_QUEUE)["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    (job,) = [j for j in map(lambda m: json.loads(m["Body"]), messages) if j["id"] == deployment_id]
    return source, job


async def test_arbitrary_header_bytes_never_give_a_server_error(
    checking_gateway: Gateway, http: aiohttp.ClientSession, moto_endpoint: str
) -> None:
    gateway = checking_gateway
    source, job = await deployed(gateway, http, moto_client("sqs", moto_endpoint))
    routes = sorted(set(concrete_routes(gateway, source, job)))
    assert len(routes) >= 8, routes
    # The deployment routes reach a real deployment, past the 404 of an unknown id.
    assert any(job["id"] in target for _, target in routes)
    failures: list[tuple[str, str, list[tuple[bytes, bytes]], int]] = []

    @hypothesis.settings(
        max_examples=40 * len(routes),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(
        route=st.sampled_from(routes), headers=header_lists, body=st.binary(max_size=64)
    )
    def throw(route: tuple[str, str], headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        method, target = route
        # A GET or HEAD with a body is as odd as the rest, and allowed.
        answer = exchange(gateway.url, request_bytes(method, target, headers, body))
        if answer.status >= 500:
            failures.append((method, target, headers, answer.status))
        assert answer.status < 500, (method, target, headers, answer)

    await asyncio.to_thread(throw)
    assert failures == []
