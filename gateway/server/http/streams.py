"""Streamed responses (downloads, event streams): prepared by their handler, so the middleware
cannot stamp them; ``start_stream`` gives them the request's id and counts their body bytes."""

from __future__ import annotations

from aiohttp import web

from gateway.server.observability.access import REQUEST_ID_HEADER, facts_of


async def start_stream(request: web.Request, response: web.StreamResponse) -> None:
    """Send ``response``'s headers, with ``X-Request-ID``; from now on the access line counts the
    body bytes written (aiohttp's own ``body_length`` counts the header block too, and only once
    ``write_eof`` ran, so a download cut short by its client would log 0 bytes sent)."""
    facts = facts_of(request)
    response.headers[REQUEST_ID_HEADER] = facts.request_id
    facts.bytes_out = 0
    write = response.write

    async def counting_write(data: bytes | bytearray | memoryview) -> None:
        await write(data)
        facts.bytes_out = (facts.bytes_out or 0) + len(data)

    response.write = counting_write  # type: ignore[method-assign]
    await response.prepare(request)
