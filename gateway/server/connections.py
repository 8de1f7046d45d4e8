"""Connection limits aiohttp's server lacks: request headers must arrive within a deadline.

aiohttp waits for a request's headers as long as the connection lives, so a client that sends
half a header and stops holds a connection (and a file descriptor) for hours. Each connection's
protocol is wrapped: from the moment a request's first byte arrives (or the connection opens) to
the moment aiohttp has parsed its headers, at most ``header_timeout`` seconds may pass; then the
client gets a 408 and the connection closes. One timer per site looks at every connection once a
second (more often for a timeout under five seconds), so a deadline is enforced at most that
late; a timer per request would cost every request a schedule and a cancel.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("gateway.server")


def _timeout_response(seconds: float) -> bytes:
    body = json.dumps({"error": f"request headers not received within {seconds:g} seconds"})
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return (head + body).encode()


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

    # --- asyncio.Protocol, forwarded ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._handler.connection_made(transport)
        self.waiting_since = time.monotonic()
        self._watch.add(self)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)
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
        late = time.monotonic() - self.timeout
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
        return _HeaderDeadline(self._server(), self._watch)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose sites give every connection ``header_timeout`` for its headers.

    Sites read ``runner.server`` only as the protocol factory they listen with; the runner's own
    shutdown goes on using aiohttp's server directly."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._watch = _Watch(header_timeout)

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        return cast(web.Server, _DeadlineFactory(inner, self._watch))
