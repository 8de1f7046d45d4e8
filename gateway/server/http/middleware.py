"""The middlewares every request passes: observation (request id, access line, metrics) and
error rendering."""

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
    OUTCOME,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    ClientAddress,
    bytes_sent,
    log_access,
    request_id_for,
    route_name,
)
from gateway.server.observability.metrics import ActiveRequests, Metrics

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def observe(metrics: Metrics, active: ActiveRequests, client_address: ClientAddress) -> Middleware:
    """Outermost: request id, one access log line and the request metrics, whatever happens."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        request[REQUEST_ID] = request_id_for(request)
        active.begin()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            if active.draining and not response.prepared:
                # Shutting down: no further requests on this connection ("Connection: close").
                response.force_close()
            return response
        except CLIENT_GONE:
            status = 499  # nginx's "client closed request": not a server error
            request[OUTCOME] = request.get(OUTCOME) or "client_disconnected"
            raise
        except asyncio.CancelledError:
            # The server gave up on the request (shutdown_timeout ran out): not a bug, not the
            # client.
            status = 503
            request[OUTCOME] = request.get(OUTCOME) or "cancelled"
            raise
        finally:
            try:
                route = route_name(request)
                metrics.observe_request(request.method, route, status, time.monotonic() - started)
                client = client_address.of(request)
                log_access(request, status, bytes_sent(request, response), started, client)
            finally:
                active.end()

    return middleware


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into the platform's JSON error shapes; no trace ever reaches a client."""
    try:
        if (unmet := unmet_expectation(request)) is not None:
            raise unmet
        response: web.StreamResponse = await handler(request)
    except GatewayError as exc:
        response = render(exc)
    except web.HTTPException as exc:
        response = render_http_exception(exc)
    except (asyncio.CancelledError, *CLIENT_GONE):
        raise
    except Exception:
        log.exception("unhandled error", extra={"request_id": request.get(REQUEST_ID)})
        response = json_response(500, {"error": "internal server error"})
    if request.body_exists and not request.content.is_eof() and not response.prepared:
        # The body was refused unread: close rather than read (or wait for) what is left.
        response.force_close()
    return response


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response carries the request's id."""
    request_id = request.get(REQUEST_ID) or request_id_for(request)
    response.headers[REQUEST_ID_HEADER] = request_id
