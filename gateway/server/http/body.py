"""Reading request bodies: small JSON objects, and upload bodies streamed as they arrive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from gateway.error_codes import Code
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.server.http.expect import send_continue
from gateway.server.observability.access import tally_of

# How much of a JSON request body is read: the API's bodies are a few small fields.
MAX_JSON_BODY = 64 * 1024
# The API's bodies nest three levels at most; far deeper is an attack on the parser's stack.
MAX_JSON_DEPTH = 32
# Exceptions that mean the client went away mid-transfer: an outcome, not a server error.
CLIENT_GONE = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


def is_json_type(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


async def read_json_object(
    request: web.Request, *, allow_empty: bool, limit: int = MAX_JSON_BODY
) -> dict[str, Any]:
    """Read a small JSON object body (at most ``limit`` bytes, else 413): 415 for a non-JSON
    type, 400 for malformed JSON. Call it once the request's credentials are accepted: a client
    that waits for ``100 Continue`` is told to send the body here."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("request body too large")
    await send_continue(request)
    raw = await _read_at_most(request, limit + 1)
    tally_of(request).bytes_in = len(raw)
    if len(raw) > limit:
        raise PayloadTooLarge("request body too large")
    if not raw.strip():
        if allow_empty:
            return {}
        raise BadRequest("request body is empty; expected a JSON object", code=Code.INVALID_JSON)
    if not is_json_type(request.content_type):
        raise UnsupportedMediaType("expected Content-Type: application/json")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON", code=Code.INVALID_JSON) from None
    except RecursionError:
        # json's decoder recurses once per level: a body of a few thousand "[" exhausts the stack.
        data = None
        too_deep = True
    else:
        too_deep = _deeper_than(data, MAX_JSON_DEPTH)
    if too_deep:
        # Refused the same way whatever the interpreter's recursion limit lets json parse.
        raise BadRequest("request body is nested too deeply", code=Code.INVALID_JSON)
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object", code=Code.INVALID_JSON)
    return data


async def _read_at_most(request: web.Request, size: int) -> bytes:
    """The body up to ``size`` bytes: ``read(n)`` returns what has arrived so far, which for a
    body in several TCP segments is only its first part."""
    raw = bytearray()
    while len(raw) < size:
        chunk = await request.content.read(size - len(raw))
        if not chunk:
            break
        raw += chunk
    return bytes(raw)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels in ``value`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# Bytes asyncio reads per recv() on a connection that is not reading a body (headers, an upload
# waiting for a part buffer), and on one that is. What a connection holds beyond aiohttp's
# read-ahead is one such read: 256 KiB (asyncio's default) for every upload waiting for a buffer
# was most of what 200 of them cost outside the budget; a body being read keeps the larger reads,
# which cost less CPU per byte.
IDLE_RECV_BYTES = 64 * 1024
BODY_RECV_BYTES = 256 * 1024


def set_recv_size(transport: asyncio.BaseTransport | None, size: int) -> None:
    """How much the connection reads at once (asyncio's selector transports; others: nothing)."""
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = size


# Seconds of waiting for a client over which its upload rate is judged (half of body_timeout when
# that is shorter, so a slow upload is cut before the ones waiting for its buffer give up):
# long enough for TCP to get going and for a brief stall, short enough that a trickle is cut
# within seconds rather than hours.
RATE_WINDOW_SECONDS = 10.0


class _Rate:
    """How fast a client sends, judged over each ``window`` seconds spent waiting for it (time
    the server itself is not reading, waiting for buffer room or for S3, does not count)."""

    def __init__(self, minimum: int, window: float) -> None:
        self.minimum = minimum
        self.window = window
        self.waited = 0.0
        self.received = 0

    def add(self, waited: float, received: int) -> None:
        self.waited += waited
        self.received += received
        if self.waited < self.window:
            return
        rate = self.received / self.waited
        if rate < self.minimum:
            raise RequestTimeout(
                f"upload body arrived at {rate:.0f} bytes/s, below the minimum of "
                f"{self.minimum} (server.min_upload_rate); upload abandoned"
            )
        self.waited, self.received = 0.0, 0


async def counted_body(
    request: web.Request,
    idle_timeout: float,
    on_bytes: Callable[[int], None],
    min_rate: int = 0,
) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted; ``RequestTimeout`` if no byte comes for
    ``idle_timeout`` seconds (aiohttp's server has no idle timeout while a handler reads), or if
    it comes slower than ``min_rate`` bytes a second (0: any rate)."""
    tally = tally_of(request)
    tally.bytes_in = 0
    rate = _Rate(min_rate, min(RATE_WINDOW_SECONDS, idle_timeout / 2)) if min_rate else None
    loop = asyncio.get_running_loop()
    set_recv_size(request.transport, BODY_RECV_BYTES)
    try:
        async for chunk in _timed_chunks(request, idle_timeout, rate, loop):
            tally.bytes_in += len(chunk)
            on_bytes(len(chunk))
            yield chunk
    finally:
        set_recv_size(request.transport, IDLE_RECV_BYTES)


async def _timed_chunks(
    request: web.Request,
    idle_timeout: float,
    rate: _Rate | None,
    loop: asyncio.AbstractEventLoop,
) -> AsyncIterator[bytes]:
    while True:
        started = loop.time()
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await request.content.readany()
        except TimeoutError:
            raise RequestTimeout(
                f"no body data for {idle_timeout:g} seconds; upload abandoned"
            ) from None
        if not chunk:
            return
        if rate is not None:
            rate.add(loop.time() - started, len(chunk))
        yield chunk
