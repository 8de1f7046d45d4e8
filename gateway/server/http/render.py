"""The one place where errors meet aiohttp: ``GatewayError`` and aiohttp's own HTTP errors
rendered in the platform's JSON shapes (SPEC section 2)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.error_codes import Code
from gateway.errors import GatewayError


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )


def render(error: GatewayError) -> web.Response:
    return json_response(error.status, error.body(), error.headers())


# aiohttp's own HTTP errors (unknown route, wrong method...) in the platform's shapes.
_HTTP_MESSAGES = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


def render_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status < 400:  # redirects: the same answer, as a response rather than an exception
        return web.Response(status=exc.status, headers=exc.headers)
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    if exc.status == 404:
        return json_response(404, {"resource": "route", "error": "not found"}, headers)
    message = _HTTP_MESSAGES.get(exc.status, exc.reason.lower())
    body: dict[str, Any] = {"error": message}
    if exc.status in (400, 403):
        body["code"] = Code.BAD_REQUEST if exc.status == 400 else Code.FORBIDDEN
    return json_response(exc.status, body, headers)
