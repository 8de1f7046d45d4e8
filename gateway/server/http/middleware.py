"""The one middleware every request passes: request id, error rendering, the access line and
the request metrics.

One middleware rather than a chain, and no ``on_response_prepare`` signal for the request id:
each layer costs every request a coroutine, and ``POST /v1/sources`` is measured against a bare
handler (BENCHMARKS.md, 1c). Streamed responses get their id where they are prepared
(``gateway.server.http.streams``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.errors import GatewayError
from gateway.server.http.body import CLIENT_GONE
from gateway.server.http.expect import unmet_expectation
from gateway.server.http.render import json_response, render, render_http_exception
from gateway.server.observability.access import (
    REQUEST_ID_HEADER,
    TALLY,
    AccessLog,
    ClientAddress,
    RequestTally,
    bytes_sent,
    request_id_for,
    route_name,
)
from gateway.server.observability.metrics import ActiveRequests, Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observe(
    metrics: Metrics, active: ActiveRequests, client_address: ClientAddress, access: AccessLog
) -> Middleware:
    """Outermost: request id, JSON errors, one access line and the request metrics, whatever
    happens."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        tally = RequestTally(request_id_for(request), time.monotonic())
        request[TALLY] = tally
        active.begin()
        status = 500
        response: web.StreamResponse | None = None
        try:
            try:
                if (unmet := unmet_expectation(request)) is not None:
                    raise unmet
                response = await handler(request)
            # Every failure in the platform's JSON error shapes; no trace ever reaches a client.
            except GatewayError as exc:
                response = render(exc)
            except web.HTTPException as exc:
                response = render_http_exception(exc)
            except CLIENT_GONE as exc:
                if not _client_gone(request):  # a connection of ours broke: a server error
                    log.error("unhandled error", exc_info=exc, extra=_id(tally))
                    response = json_response(500, {"error": "internal server error"})
                else:
                    # nginx's "client closed request": not a server error. Answered rather than
                    # raised: aiohttp logs what a handler raises as an error with its trace; the
                    # answer goes nowhere (aiohttp drops it quietly on the closed connection).
                    tally.outcome = tally.outcome or "client_disconnected"
                    status = 499
                    return _unsent(status)
            except asyncio.CancelledError:
                # The server gave up on the request (shutdown_timeout ran out): neither a bug nor
                # the client.
                status = 503
                tally.outcome = tally.outcome or "cancelled"
                raise
            except Exception:
                log.exception("unhandled error", extra=_id(tally))
                response = json_response(500, {"error": "internal server error"})
            status = response.status
            if not response.prepared:
                _finish_headers(request, response, tally, active.draining)
            return response
        finally:
            try:
                route = route_name(request)
                metrics.requests.observe(
                    request.method, route, status, time.monotonic() - tally.started
                )
                if access.enabled:
                    sent = bytes_sent(request, response, tally)
                    access.record(request, tally, route, status, sent, client_address.of(request))
            finally:
                active.end()

    return middleware


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _unsent(status: int) -> web.StreamResponse:
    response = web.Response(status=status)
    response.force_close()
    return response


def _id(tally: RequestTally) -> dict[str, str]:
    return {"request_id": tally.request_id}


def _finish_headers(
    request: web.Request, response: web.StreamResponse, tally: RequestTally, draining: bool
) -> None:
    """The last word on a response its handler did not send itself."""
    response.headers[REQUEST_ID_HEADER] = tally.request_id
    if draining or (request.body_exists and not request.content.is_eof()):
        # Shutting down, or the body was refused unread: close rather than read (or wait for)
        # what is left; no further requests on this connection ("Connection: close").
        response.force_close()
