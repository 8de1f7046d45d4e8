"""Streamed responses (downloads, event streams): prepared by their handler, so the middleware
cannot stamp them; ``start_stream`` gives them the request's id and counts their body bytes,
``send_within`` gives up on a client that stopped reading, and ``cut_short`` ends one whose
headers are out when something goes wrong."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.server.observability.access import REQUEST_ID_HEADER, tally_of


async def start_stream(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response``'s headers, with ``X-Request-ID``; from now on the access line counts the
    body bytes written (aiohttp's own ``body_length`` counts the header block too, and only once
    ``write_eof`` ran, so a download cut short by its client would log 0 bytes sent)."""
    tally = tally_of(request)
    response.headers[REQUEST_ID_HEADER] = tally.request_id
    tally.bytes_out = 0
    write = response.write

    async def counting_write(data: bytes | bytearray | memoryview) -> None:
        await write(data)
        tally.bytes_out = (tally.bytes_out or 0) + len(data)

    response.write = counting_write  # type: ignore[method-assign]
    await response.prepare(request)


class ClientStalled(Exception):
    """The client took no bytes for ``server.send_timeout`` seconds."""


async def send_within(response: web.StreamResponse, data: bytes, seconds: float) -> None:
    """Write ``data``, or ``ClientStalled`` after ``seconds``. A write waits while the
    client's socket buffer is full: a client that stops reading would hold the connection (and
    what feeds it: an S3 stream, a look at the bucket) for ever."""
    try:
        async with asyncio.timeout(seconds):
            await response.write(data)
    except TimeoutError:
        raise ClientStalled from None


def cut_short(request: web.Request, response: web.StreamResponse, *, flush: bool) -> None:
    """End a response whose headers are out: closing the connection (short of Content-Length, or
    without a chunked body's last chunk) is the only way left to tell the client the body is
    incomplete; never a second status line. ``flush``: send what is buffered first (not for a
    client that stopped reading)."""
    response.force_close()
    if request.transport is not None:
        if flush:
            request.transport.close()
        else:
            request.transport.abort()
