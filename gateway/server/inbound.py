"""Inbound connections: the limits aiohttp's server lacks (request headers within a deadline).

aiohttp waits for a request's headers as long as the connection lives, so a client that sends
half a header and stops holds a connection (and a file descriptor) for hours. Each connection's
protocol is wrapped: from the moment a request's first byte arrives (or the connection opens) to
the moment aiohttp has parsed its headers, at most ``header_timeout`` seconds may pass; then the
client gets a 408 and the connection closes. Bytes of a next request that came with the previous
one (pipelining: a request and the start of another in one segment) have their deadline from the
moment the previous request is done. One timer per site looks at every connection once a
second (more often for a timeout under five seconds), so a deadline is enforced at most that
late; a timer per request would cost every request a schedule and a cancel.

A request aiohttp cannot parse gets the platform's JSON 400 here too: aiohttp's own answer is
plain text quoting the offending line, which may hold a bearer token or a URL token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any, cast

from aiohttp import StreamReader, http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from gateway.errors import BadRequest
from gateway.server.http.body import IDLE_RECV_BYTES, set_recv_size
from gateway.server.http.render import json_response, render
from gateway.server.observability.access import REQUEST_ID_HEADER, request_id_for

log = logging.getLogger("gateway.server")

# How much of a request body aiohttp reads ahead of the handler (it stops reading the socket at
# twice this). With its default, 64 KiB, and asyncio's 256 KiB reads, an upload waiting for a part
# buffer held about 0.75 MiB outside the budget (200 chunked uploads under a 32 MiB budget: RSS
# +186 MiB; BENCHMARKS.md, "Connections"); see also IDLE_RECV_BYTES.
READ_BUFFER_BYTES = 32 * 1024


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": f"request headers not received within {seconds:g} seconds"})
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


# What a client is told of a request aiohttp could not parse: the kind of mistake, never the bytes.
_PARSE_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "request line or header too long"),
    (http_exceptions.InvalidHeader, "malformed request header"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidURLError, "malformed request target"),
    (http_exceptions.PayloadEncodingError, "malformed request body framing"),
)


def parse_error(exc: BaseException | None) -> BadRequest:
    """The JSON 400 for a request aiohttp's parser refused."""
    for kind, what in _PARSE_ERRORS:
        if isinstance(exc, kind):
            return BadRequest(what)
    return BadRequest("malformed request")


class _GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what its parser refuses with our JSON errors."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own logging and checks first (the line is logged masked, as a warning:
        # gateway.server.observability.logs); its text answer is replaced.
        super().handle_error(request, status, exc, "")
        if status == HTTPStatus.BAD_REQUEST:
            response = render(parse_error(exc))
        else:  # an error no middleware saw (none is known): the bare 5xx of SPEC section 2
            response = json_response(status, {"error": HTTPStatus(status).phrase.lower()})
        response.headers[REQUEST_ID_HEADER] = request_id_for(request)
        response.force_close()
        return response


class _HeaderDeadline(asyncio.Protocol):
    """aiohttp's protocol for one connection, with the header deadline added."""

    def __init__(self, handler: RequestHandler, watch: _Watch) -> None:
        self._handler = handler
        self._watch = watch
        self.transport: asyncio.Transport | None = None
        # Since when the headers of the coming request are awaited; None while a request is
        # being handled and while a kept-alive connection idles between requests.
        self.waiting_since: float | None = None
        self.bytes_seen = False
        # Bytes of a further request arrived after the last complete one: when the request being
        # handled is done, the next one's headers are awaited (see data_received).
        self.next_started = False
        self._counted = 0  # requests parsed when _latest was last looked at
        self._latest: StreamReader | None = None  # the body of the latest request, until complete
        self._latest_length: int | None = None  # its Content-Length; None when chunked

    # --- asyncio.Protocol, forwarded ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        set_recv_size(transport, IDLE_RECV_BYTES)  # until a body is read (counted_body)
        self._handler.connection_made(transport)
        self.waiting_since = time.monotonic()
        self._watch.add(self)

    def data_received(self, data: bytes) -> None:
        # The parser keeps a partial request to itself; whether a segment that may end a request
        # also starts the next one is told by feeding its last byte apart: if the latest request
        # was complete before that byte, the byte belongs to a further one. The middle of a body
        # (most of an upload's segments) is fed whole.
        handler = self._handler
        if not data:
            return
        if not self._may_end_request(data):
            handler.data_received(data)
            self.next_started = False
        else:
            if len(data) > 1:
                handler.data_received(data[:-1])
                self._note_parsed()
            complete_before = self._latest_complete()
            count_before = handler._request_count
            handler.data_received(data[-1:])
            self.next_started = complete_before and handler._request_count == count_before
        self._note_parsed()
        if self._has_request():
            self.waiting_since = None
        elif self.waiting_since is None:
            self.waiting_since = time.monotonic()  # the next request on a kept-alive connection
        self.bytes_seen = True

    def eof_received(self) -> None:
        self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.discard(self)
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    # --- the deadline ---

    def _has_request(self) -> bool:
        # A parsed request waiting to be handled, or one being handled: headers have arrived.
        return bool(self._handler._messages) or self._handler._request_in_progress

    def _note_parsed(self) -> None:
        """Remember the body of the latest request the parser produced, if it just produced one:
        right after the feed, while it is still queued (the handler's task takes it later)."""
        handler = self._handler
        if handler._request_count == self._counted:
            return
        self._counted = handler._request_count
        self._latest, self._latest_length = None, None
        if handler._messages:
            message, self._latest = handler._messages[-1]
            length = getattr(message, "headers", {}).get("Content-Length", "")
            if not getattr(message, "chunked", True) and length.isdigit():
                self._latest_length = int(length)

    def _latest_complete(self) -> bool:
        """Whether the latest request parsed so far has all its body (or none was parsed yet)."""
        if self._latest is not None and self._latest.is_eof():
            self._latest = None
        return self._latest is None

    def _may_end_request(self, data: bytes) -> bool:
        """Whether ``data`` may hold the end of a request (so perhaps the start of another)."""
        if self._latest_complete():
            return True  # it starts a request
        assert self._latest is not None
        if self._latest_length is not None:
            return len(data) >= self._latest_length - self._latest.total_bytes
        # A chunked body ends with an empty line, which may straddle two segments.
        return b"\r\n\r\n" in data or b"\n" in data[:3]

    def idle(self, now: float) -> None:
        """The tick's look at a connection: a request is done and bytes of the next one came
        with it, so that one's headers are awaited from now."""
        if self.next_started and self.waiting_since is None and not self._has_request():
            self.next_started = False
            self.waiting_since = now

    def expire(self, timeout: float) -> None:
        """The headers did not arrive in time: 408 if the client sent anything, then close."""
        self.waiting_since = None
        transport = self.transport
        if transport is None or transport.is_closing() or self._has_request():
            return
        if self.bytes_seen:
            peer = transport.get_extra_info("peername")
            log.warning(
                "request headers not received within %gs from %s; connection closed",
                timeout,
                peer[0] if isinstance(peer, tuple) else peer,
            )
            transport.write(_timeout_response(timeout))
        transport.close()


class _Watch:
    """The connections of one site, checked for late headers every ``tick`` seconds (a second,
    or a fifth of the timeout when that is shorter): a connection's deadline passes at most one
    tick late. One timer for all of them, rather than one set and cancelled per request."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = min(1.0, timeout / 5)
        self._connections: set[_HeaderDeadline] = set()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: _HeaderDeadline) -> None:
        self._connections.add(connection)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)

    def discard(self, connection: _HeaderDeadline) -> None:
        self._connections.discard(connection)

    def _check(self) -> None:
        self._timer = None
        now = time.monotonic()
        for connection in self._connections:
            connection.idle(now)
        late = now - self.timeout
        for connection in [
            c for c in self._connections if c.waiting_since is not None and c.waiting_since <= late
        ]:
            connection.expire(self.timeout)
        if self._connections:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)


class _DeadlineFactory:
    """The protocol factory a site listens with: aiohttp's, each connection given the deadline."""

    def __init__(self, server: web.Server, watch: _Watch) -> None:
        self._server = server
        self._watch = watch

    def __call__(self) -> asyncio.Protocol:
        # web.Server makes a RequestHandler with the settings it keeps (aiohttp's own __call__).
        server = self._server
        handler = _GatewayRequestHandler(server, loop=server._loop, **server._kwargs)
        return _HeaderDeadline(handler, self._watch)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose sites give every connection ``header_timeout`` for its headers.

    Sites read ``runner.server`` only as the protocol factory they listen with; the runner's own
    shutdown goes on using aiohttp's server directly."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        kwargs.setdefault("read_bufsize", READ_BUFFER_BYTES)
        super().__init__(app, **kwargs)
        self._watch = _Watch(header_timeout)

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        return cast(web.Server, _DeadlineFactory(inner, self._watch))
