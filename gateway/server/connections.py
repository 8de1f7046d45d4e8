"""Connection limits aiohttp's server lacks: request headers must arrive within a deadline.

aiohttp waits for a request's headers as long as the connection lives, so a client that sends
half a header and stops holds a connection (and a file descriptor) for hours. Each connection's
protocol is wrapped: from the moment a request's first byte arrives (or the connection opens) to
the moment aiohttp has parsed its headers, at most ``header_timeout`` seconds may pass; then the
client gets a 408 and the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
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

    def __init__(self, handler: RequestHandler, timeout: float) -> None:
        self._handler = handler
        self._timeout = timeout
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._bytes_seen = False

    # --- asyncio.Protocol, forwarded ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._handler.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)
        if self._handler_has_request():
            self._disarm()
        elif self._timer is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        self._bytes_seen = True

    def eof_received(self) -> None:
        self._handler.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    # --- the deadline ---

    def _handler_has_request(self) -> bool:
        # A parsed request waiting to be handled, or one being handled: headers have arrived.
        return bool(self._handler._messages) or self._handler._request_in_progress

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._bytes_seen = False
        self._timer = loop.call_later(self._timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing() or self._handler_has_request():
            return
        if self._bytes_seen:
            peer = transport.get_extra_info("peername")
            log.warning(
                "request headers not received within %gs from %s; connection closed",
                self._timeout,
                peer[0] if isinstance(peer, tuple) else peer,
            )
            transport.write(_timeout_response(self._timeout))
        transport.close()


class _DeadlineFactory:
    """The protocol factory a site listens with: aiohttp's, each connection given the deadline."""

    def __init__(self, server: web.Server, timeout: float) -> None:
        self._server = server
        self._timeout = timeout

    def __call__(self) -> asyncio.Protocol:
        return _HeaderDeadline(self._server(), self._timeout)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose sites give every connection ``header_timeout`` for its headers.

    Sites read ``runner.server`` only as the protocol factory they listen with; the runner's own
    shutdown goes on using aiohttp's server directly."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    @property
    def server(self) -> web.Server | None:
        inner = super().server
        if inner is None:
            return None
        return cast(web.Server, _DeadlineFactory(inner, self._header_timeout))
