"""Errors a client can see: one tree, each class with its status and code (no web framework here;
``gateway.server.http.render`` turns them into the platform's JSON shapes).

    class                       status  code                    body
    GatewayError                500     -                       {"error"}
     +-- BadRequest             400     bad_request             {"error", "code"}
     +-- Unauthorized           401     -                       {"error"} + WWW-Authenticate
     +-- Forbidden              403     forbidden               {"error", "code"}
     +-- TokenInvalid           403     token_invalid           {"error", "code"}
     +-- TokenExpired           403     token_expired           {"error", "code"}
     +-- NotFound               404     -                       {"resource", "error": "not found"}
     +-- RequestTimeout         408     -                       {"error"}
     +-- PayloadTooLarge        413     -                       {"error"}
     +-- UnsupportedMediaType   415     unsupported_media_type  {"error", "code"}
     +-- RangeNotSatisfiable    416     -                       {"error"} + Content-Range
     +-- ExpectationFailed      417     -                       {"error"}  Expect not 100-continue
     +-- ValidationFailed       422     -                       {"errors": {field: [messages]}}
     +-- ArchiveInvalid         422     archive_invalid         {"error", "code"}  upload refused
     +-- TooManyRequests        429     rate_limited            {"error", "code"} + Retry-After,
                                                                RateLimit-Policy, RateLimit
     +-- BadGateway             502     -                       {"error"}  upstream answered badly
     +-- ServiceUnavailable     503     -                       {"error"} + Retry-After

A subclass may carry a more precise code (``invalid_json`` is a ``BadRequest``). Anything else
raised by a handler is logged with its trace and answered with a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


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


class ExpectationFailed(GatewayError):
    status = 417


class ValidationFailed(GatewayError):
    status = 422

    def __init__(self, errors: Mapping[str, Sequence[str]]) -> None:
        assert errors, "a 422 always names at least one field"
        super().__init__("validation failed")
        self.errors = {k: list(v) for k, v in errors.items()}

    def body(self) -> dict[str, Any]:
        return {"errors": self.errors}


class ArchiveInvalid(GatewayError):
    """The upload is not a gzip-compressed tar archive that is safe to unpack; ``reason`` says
    why, naming the entry when there is one."""

    status = 422
    code = "archive_invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(f"archive refused: {reason}")
        self.reason = reason


class TooManyRequests(GatewayError):
    """A limit of ``auth.limits`` is reached: ``policy`` and ``state`` are the IETF draft's
    ``RateLimit-Policy`` and ``RateLimit`` fields."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, policy: str, state: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.policy = policy
        self.state = state

    def headers(self) -> dict[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Policy": self.policy,
            "RateLimit": self.state,
        }


class BadGateway(GatewayError):
    status = 502


class ServiceUnavailable(GatewayError):
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
