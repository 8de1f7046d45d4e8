"""Request ids, the client's address, byte counts and the one access log line per request.

Nothing here ever logs a query string: source URLs carry their token there.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Sequence

from aiohttp import web

from gateway.redaction import MASK

access_log = logging.getLogger("gateway.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client-supplied id is kept only if it is short and plain, so it cannot forge log content.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID = web.RequestKey("request_id", str)
BYTES_IN = web.RequestKey("bytes_in", int)
# Body bytes written by a streamed response (headers and chunk framing not counted).
BYTES_OUT = web.RequestKey("bytes_out", int)
# How a transfer ended when the status alone does not say it (stored, client_disconnected...).
OUTCOME = web.RequestKey("outcome", str)


def request_id_for(request: web.BaseRequest) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if given and _REQUEST_ID_RE.fullmatch(given) else secrets.token_hex(16)


class ClientAddress:
    """The client's address: ``X-Forwarded-For`` is believed only from trusted proxies."""

    def __init__(self, trusted_proxies: Sequence[str]) -> None:
        self._trusted = [ipaddress.ip_network(c, strict=False) for c in trusted_proxies]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)

    def of(self, request: web.BaseRequest) -> str | None:
        remote = request.remote
        if not self._trusted or remote is None or not self._is_trusted(remote):
            return remote
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        # Walk from the nearest hop back; the first address not ours is the client.
        for hop in reversed([h for h in hops if h]):
            if not self._is_trusted(hop):
                return hop
        return remote


async def count_streamed_bytes(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: count the body bytes a streamed response writes.

    aiohttp's own ``body_length`` counts the header block too, and only once ``write_eof`` ran,
    so a download cut short by its client would log 0 bytes sent."""
    if isinstance(response, web.Response):
        return  # the body is known: content_length
    request[BYTES_OUT] = 0
    write = response.write

    async def counting_write(data: bytes | bytearray | memoryview) -> None:
        await write(data)
        request[BYTES_OUT] += len(data)

    response.write = counting_write  # type: ignore[method-assign]


def bytes_sent(request: web.BaseRequest, response: web.StreamResponse | None) -> int:
    """Body bytes sent for ``request``: counted when streamed, else the response's length."""
    if BYTES_OUT in request:
        return request[BYTES_OUT]
    if response is None or request.method == "HEAD":
        return 0
    return response.content_length or 0


# The route label of requests no route matched.
UNMATCHED = "unmatched"


def route_name(request: web.BaseRequest) -> str:
    """The matched route's template (``/v1/sources/{id}``), never the concrete path or query."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None or getattr(match_info, "http_exception", None) is not None:
        return UNMATCHED
    if resource.name == UNMATCHED:  # what no route matched, refused for its Expect header
        return UNMATCHED
    canonical: str = resource.canonical
    return canonical


# A token that slipped into the path itself (a client that percent-encoded the "?") is cut out.
_TOKEN_IN_PATH_RE = re.compile(r"(?i)(token=|[?;]).*")
# Long enough for every route of the gateway; a longer path is junk and is not worth logging whole.
MAX_LOGGED_PATH = 256


def loggable_path(path: str) -> str:
    """``path`` as it may appear in a log line: nothing from a ``?``, ``;`` or ``token=`` on."""
    safe = _TOKEN_IN_PATH_RE.sub(MASK, path)
    return safe if len(safe) <= MAX_LOGGED_PATH else safe[:MAX_LOGGED_PATH] + "[...]"


def log_access(
    request: web.BaseRequest,
    status: int,
    bytes_out: int,
    started: float,
    client: str | None,
) -> None:
    """Emit the request's one access log line (JSON fields as ``extra``; never a query string)."""
    duration = time.monotonic() - started
    path = loggable_path(request.path)
    access_log.info(
        "%s %s %s",
        request.method,
        path,
        status,
        extra={
            "method": request.method,
            "path": path,
            "route": route_name(request),
            "status": status,
            "bytes_in": request.get(BYTES_IN, 0),
            "bytes_out": bytes_out,
            "duration_ms": round(duration * 1000, 2),
            "request_id": request.get(REQUEST_ID),
            "remote": client,
            "outcome": request.get(OUTCOME),
        },
    )
