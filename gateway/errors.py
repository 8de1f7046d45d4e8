"""Errors a client can see, and the one place that renders them as JSON.

    GatewayError                      status, code, message; rendered {"error", "code"?}
     +-- BadRequest (400)             malformed JSON, bad parameters
     +-- Unauthorized (401)           no or unknown API token; adds WWW-Authenticate
     +-- Forbidden (403)              token may not act on this app
     +-- TokenInvalid (403)           URL token bad, tampered, wrong purpose or id
     +-- TokenExpired (403)           URL token past its max age
     +-- NotFound (404)               {"resource", "error": "not found"}
     +-- RequestTimeout (408)         a request body that stopped arriving
     +-- PayloadTooLarge (413)
     +-- UnsupportedMediaType (415)
     +-- RangeNotSatisfiable (416)
     +-- ValidationFailed (422)       {"errors": {field: [messages]}}
     +-- BadGateway (502)             upstream (S3, deployer) answered badly
     +-- ServiceUnavailable (503)     upstream unreachable; adds Retry-After

Anything else raised by a handler is logged with its trace and answered with a bare 500.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from aiohttp import web


class GatewayError(Exception):
    """An error with an HTTP status and a message that is safe to show to the client."""

    status: ClassVar[int] = 500
    code: ClassVar[str | None] = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def body(self) -> dict[str, Any]:
        if self.code is not None:
            return {"error": self.message, "code": self.code}
        return {"error": self.message}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="sources-gateway"'}


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class TokenInvalid(GatewayError):
    status = 403
    code = "token_invalid"


class TokenExpired(GatewayError):
    status = 403
    code = "token_expired"


class NotFound(GatewayError):
    status = 404

    def __init__(self, resource: str = "source") -> None:
        super().__init__("not found")
        self.resource = resource

    def body(self) -> dict[str, Any]:
        return {"resource": self.resource, "error": "not found"}


class RequestTimeout(GatewayError):
    status = 408


class PayloadTooLarge(GatewayError):
    status = 413


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class RangeNotSatisfiable(GatewayError):
    status = 416

    def __init__(self, size: int) -> None:
        super().__init__("requested range not satisfiable")
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class ValidationFailed(GatewayError):
    status = 422

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        assert errors, "a 422 always names at least one field"
        super().__init__("validation failed")
        self.errors = {k: list(v) for k, v in errors.items()}

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class BadGateway(GatewayError):
    status = 502


class ServiceUnavailable(GatewayError):
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


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
        body["code"] = "bad_request" if exc.status == 400 else "forbidden"
    return json_response(exc.status, body, headers)
