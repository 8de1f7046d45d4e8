"""A fault-injecting HTTP proxy for tests: sits between a gateway and the moto server.

Every request is forwarded to ``upstream`` unchanged (bodies are small in tests, so they are read
whole), except the ones a ``Fault`` matches: from the ``nth`` matching request on, ``times`` of
them get the fault instead of (or in the middle of) moto's answer:

- ``drop``: the connection is closed without an answer;
- ``500`` / ``503``: an S3-style XML error (``InternalError`` / ``SlowDown``);
- ``stall``: nothing is answered until the proxy stops (the client's read timeout must fire);
- ``truncate``: moto's status and headers, then half of its body, then the connection closes;
- ``stall_body``: moto's status and headers, half of its body, then silence;
- ``empty_etag``: moto's answer with every ETag emptied, in the headers and the XML body (what
  some S3 implementations answer to CompleteMultipartUpload);
- ``ignore_conditions``: the request forwarded without ``If-Match``/``If-None-Match`` (a store
  that does not honour conditional writes);
- ``ignore_range``: the request forwarded without ``Range`` (a store that answers the whole object).

``requests`` records ``(method, path?query, what happened)`` for every request, for assertions,
once its body is read; ``started`` records ``(method, path?query)`` as soon as a request arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

from .ports import free_port

Action = Literal[
    "drop",
    "500",
    "503",
    "stall",
    "truncate",
    "stall_body",
    "empty_etag",
    "ignore_conditions",
    "ignore_range",
]

# Headers that belong to one hop, or that aiohttp computes again for the next one.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "expect",
    "te",
    "trailer",
    "upgrade",
}

_CONDITIONS = {"if-match", "if-none-match"}

_S3_ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
}


@dataclass
class Fault:
    """What to do, and to which requests: the ``nth`` match on and the ``times - 1`` after it."""

    action: Action
    method: str | None = None
    query: str | None = None  # a substring of the raw query string, e.g. "partNumber="
    path: str | None = None  # a substring of the path
    exclude_query: str | None = None  # requests whose query string has this are left alone
    nth: int = 1
    times: int = 1
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def matches(self, request: web.Request) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if self.query is not None and self.query not in request.query_string:
            return False
        if self.exclude_query is not None and self.exclude_query in request.query_string:
            return False
        return self.path is None or self.path in request.path

    def fire(self, request: web.Request) -> bool:
        """Count a matching request; True when this one gets the fault."""
        if not self.matches(request):
            return False
        self.seen += 1
        if self.seen >= self.nth and self.fired < self.times:
            self.fired += 1
            return True
        return False


class FaultProxy:
    """An HTTP proxy on a loopback port; ``url`` goes where a client expects ``upstream``."""

    def __init__(self, upstream: str, stall_seconds: float = 120.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.stall_seconds = stall_seconds
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.started: list[tuple[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._stalled: set[asyncio.Task[None]] = set()

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def count(self, method: str, query: str = "") -> int:
        """How many requests with ``method`` and ``query`` in their query string arrived."""
        return sum(1 for m, target, _ in self.requests if m == method and query in target)

    def part_numbers(self) -> list[int]:
        """The part numbers of the UploadPart requests that arrived, in order."""
        numbers = []
        for method, target, _ in self.requests:
            found = re.search(r"[?&]partNumber=(\d+)", target)
            if method == "PUT" and found:
                numbers.append(int(found.group(1)))
        return numbers

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        target = request.path_qs
        self.started.append((request.method, target))
        body = await request.read()
        fault = next((f for f in self.faults if f.fire(request)), None)
        action = fault.action if fault is not None else "forward"
        self.requests.append((request.method, target, action))
        if action == "drop":
            return self._drop(request)
        if action in _S3_ERRORS:
            code, message = _S3_ERRORS[action]
            xml = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return web.Response(status=int(action), text=xml, content_type="application/xml")
        if action == "stall":
            await asyncio.sleep(self.stall_seconds)
            return self._drop(request)
        return await self._forward(request, target, body, action)

    async def _forward(
        self, request: web.Request, target: str, body: bytes, action: str
    ) -> web.StreamResponse:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if action == "ignore_conditions":
            headers = {k: v for k, v in headers.items() if k.lower() not in _CONDITIONS}
            action = "forward"
        elif action == "ignore_range":
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
            action = "forward"
        async with self._http.request(
            request.method,
            self.upstream + target,
            headers=headers,
            # aiohttp warns of a large bytes body (it would be sent in one blocking piece).
            data=io.BytesIO(body) if body else None,
        ) as upstream:
            payload = await upstream.read()
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    response.headers.add(name, value)
        if request.method == "HEAD":
            response.content_length = int(upstream.headers.get("Content-Length", 0))
            await response.prepare(request)
            await response.write_eof()
            return response
        if action == "empty_etag":
            payload = re.sub(rb"<ETag>[^<]*</ETag>", b"<ETag></ETag>", payload)
            if "ETag" in response.headers:
                response.headers["ETag"] = ""
            action = "forward"
        if action == "forward" or not payload:
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload)
            await response.write_eof()
            return response
        # A fault in the middle of the body: announce all of it, send half.
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        if action == "stall_body":
            await asyncio.sleep(self.stall_seconds)
        return self._drop(request)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        # aiohttp finds the transport gone and writes nothing more.
        raise asyncio.CancelledError


@contextlib.asynccontextmanager
async def fault_proxy(upstream: str) -> AsyncIterator[FaultProxy]:
    proxy = FaultProxy(upstream)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
