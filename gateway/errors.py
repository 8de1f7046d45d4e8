"""Every error the server answers with: one tree, each class with its status and code (no web
framework here; ``gateway.server.http.render`` turns them into the platform's JSON shapes). The
codes, their statuses and body keys are the table of ``gateway.error_codes``.

    class                       status  code                    body
    GatewayError                500     -                       {"error"}
     +-- BadRequest             400     bad_request             {"error", "code"}
     |    +-- InconsistentLength        inconsistent_upload_length  + problem type
     |    +-- ContentMD5Mismatch        bad_digest
     |    +-- IncompleteBody            incomplete_body
     +-- Unauthorized           401     -                       {"error"} + WWW-Authenticate
     +-- Forbidden              403     forbidden               {"error", "code"}
     +-- TokenInvalid           403     token_invalid           {"error", "code"}
     +-- TokenExpired           403     token_expired           {"error", "code"}
     +-- NotFound               404     -                       {"resource", "error": "not found"}
     |    +-- UploadNotFound, ObjectNotFound, DeploymentNotFound  (resource upload, source,
     |                                                            deployment)
     +-- RequestTimeout         408     -                       {"error"}
     +-- Conflict               409     -                       {"error"}
     |    +-- OffsetMismatch            mismatching_upload_offset  + Upload-Offset, problem type
     |    +-- UploadSuperseded          upload_superseded       a newer request took the upload
     |    +-- TooManyUploads            too_many_uploads        max_open_per_source reached
     |    +-- EventConflict             -                       an event number used differently
     +-- TusPreconditionFailed  412     -                       {"error"}  Tus-Resumable unknown
     +-- PayloadTooLarge        413     -                       {"error"}
     |    +-- TooManyEvents             too_many_events         {"error", "code"}
     +-- UnsupportedMediaType   415     unsupported_media_type  {"error", "code"}
     +-- RangeNotSatisfiable    416     -                       {"error"} + Content-Range
     +-- ExpectationFailed      417     -                       {"error"}  Expect not 100-continue
     +-- ValidationFailed       422     -                       {"errors": {field: [messages]}}
     +-- ArchiveInvalid         422     archive_invalid         {"error", "code"}  upload refused
     +-- TooManyRequests        429     rate_limited            {"error", "code"} + Retry-After,
                                                                RateLimit-Policy, RateLimit
     +-- ChecksumMismatch       460     checksum_mismatch       {"error", "code"}  tus chunk refused
     +-- DeployerRejected       4xx     the deployer's          the deployer's JSON body
     +-- ResumableUnavailable   501     -                       {"error"}  store lacks If-Match
     +-- BadGateway             502     -                       {"error"}  upstream answered badly
     |    +-- StorageFailed, DeployerUnavailable, QueueFailed
     +-- ServiceUnavailable     503     -                       {"error"} + Retry-After
          +-- StorageUnavailable, QueueUnavailable, BudgetExhausted
          +-- ObjectChanged             a read of one version found it replaced
          +-- WriteConflict             a conditional write lost to another writer

A subclass may carry a more precise code (``invalid_json`` is a ``BadRequest``). Anything else
raised by a handler is logged with its trace and answered with a bare 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from gateway.error_codes import Code


class GatewayError(Exception):
    """An error with an HTTP status and a message that is safe to show to the client."""

    status: ClassVar[int] = 500
    code: ClassVar[Code | None] = None

    def __init__(self, message: str, *, code: Code | None = None) -> None:
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
    code = Code.BAD_REQUEST


class Unauthorized(GatewayError):
    status = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="sources-gateway"'}


class Forbidden(GatewayError):
    status = 403
    code = Code.FORBIDDEN


class TokenInvalid(GatewayError):
    status = 403
    code = Code.TOKEN_INVALID


class TokenExpired(GatewayError):
    status = 403
    code = Code.TOKEN_EXPIRED


class NotFound(GatewayError):
    status = 404

    def __init__(self, resource: str = "source") -> None:
        super().__init__("not found")
        self.resource = resource

    def body(self) -> dict[str, Any]:
        return {"resource": self.resource, "error": "not found"}


class UploadNotFound(NotFound):
    """A resumable upload that never existed, was cancelled, or expired."""

    def __init__(self) -> None:
        super().__init__("upload")


class ObjectNotFound(NotFound):
    """The key does not exist (never uploaded, or removed by the lifecycle rule)."""


class DeploymentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("deployment")


class RequestTimeout(GatewayError):
    status = 408


class Conflict(GatewayError):
    status = 409


# The IETF resumable-upload draft's problem types (RFC 9457 ``type`` values).
PROBLEM_TYPES = "https://iana.org/assignments/http-problem-types#"


class OffsetMismatch(Conflict):
    """An append that does not start at the upload's offset; ``offset`` is the right one."""

    code = Code.MISMATCHING_UPLOAD_OFFSET

    def __init__(self, offset: int, provided: int | None) -> None:
        super().__init__(f"the upload's offset is {offset}, not {provided}")
        self.offset = offset
        self.provided = provided

    def body(self) -> dict[str, Any]:
        return {
            **super().body(),
            "type": PROBLEM_TYPES + "mismatching-upload-offset",
            "title": "offset from request does not match offset of resource",
            "expected-offset": self.offset,
            "provided-offset": self.provided,
        }

    def headers(self) -> dict[str, str]:
        # The draft's answer: the right offset, and the upload not complete.
        return {"Upload-Offset": str(self.offset), "Upload-Complete": "?0"}


class UploadSuperseded(Conflict):
    """A newer request on the same upload (on any instance) ended this one."""

    code = Code.UPLOAD_SUPERSEDED

    def __init__(self) -> None:
        super().__init__("a newer request on this upload took it over; this one stored nothing")


class TooManyUploads(Conflict):
    code = Code.TOO_MANY_UPLOADS


class EventConflict(Conflict):
    """A different event with a number already used, or an event after the final status."""


class InconsistentLength(BadRequest):
    """A length that contradicts the one the upload declared."""

    code = Code.INCONSISTENT_UPLOAD_LENGTH

    def body(self) -> dict[str, Any]:
        return {
            **super().body(),
            "type": PROBLEM_TYPES + "inconsistent-upload-length",
            "title": "inconsistent length values for upload",
        }


class ContentMD5Mismatch(BadRequest):
    code = Code.BAD_DIGEST

    def __init__(self) -> None:
        super().__init__("Content-MD5 does not match the body")


class IncompleteBody(BadRequest):
    code = Code.INCOMPLETE_BODY

    def __init__(self) -> None:
        super().__init__("request body ended before Content-Length")


class TusPreconditionFailed(GatewayError):
    """A tus request without a ``Tus-Resumable`` version the gateway speaks."""

    status = 412

    def headers(self) -> dict[str, str]:
        return {"Tus-Version": "1.0.0"}


class PayloadTooLarge(GatewayError):
    status = 413


class TooManyEvents(PayloadTooLarge):
    """The deployment holds its most events; only a final status is still taken."""

    code = Code.TOO_MANY_EVENTS


class UnsupportedMediaType(GatewayError):
    status = 415
    code = Code.UNSUPPORTED_MEDIA_TYPE


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
    code = Code.ARCHIVE_INVALID

    def __init__(self, reason: str) -> None:
        super().__init__(f"archive refused: {reason}")
        self.reason = reason


class TooManyRequests(GatewayError):
    """A limit of ``auth.limits`` is reached: ``policy`` and ``state`` are the IETF draft's
    ``RateLimit-Policy`` and ``RateLimit`` fields."""

    status = 429
    code = Code.RATE_LIMITED

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


class ChecksumMismatch(GatewayError):
    """A chunk whose tus ``Upload-Checksum`` does not match its bytes (discarded)."""

    status = 460
    code = Code.CHECKSUM_MISMATCH


class ResumableUnavailable(GatewayError):
    """Resumable uploads are off, or the store does not honour conditional writes."""

    status = 501


class DeployerRejected(GatewayError):
    """The deployer refused the job with a 4xx: its status and JSON body reach the client."""

    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        super().__init__(f"the deployer refused the deployment (HTTP {status})")
        self.status = status  # type: ignore[misc]
        self._body = body

    def body(self) -> dict[str, Any]:
        return self._body if self._body is not None else {"error": self.message}


class BadGateway(GatewayError):
    status = 502


class StorageFailed(BadGateway):
    """The object store answered with an error."""


class DeployerUnavailable(BadGateway):
    """The deployer could not be reached, kept failing, or answered something unusable."""


class QueueFailed(BadGateway):
    """The deployment queue answered an error (missing queue, refused credentials...)."""


class ServiceUnavailable(GatewayError):
    status = 503

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class StorageUnavailable(ServiceUnavailable):
    """The object store could not be reached or did not answer in time."""


class ObjectChanged(ServiceUnavailable):
    """A read of one version (S3's ``If-Match``) found the object replaced since its description
    was read."""

    def __init__(self) -> None:
        super().__init__(
            "the archive was replaced while it was being read; try again", retry_after=1
        )


class WriteConflict(ServiceUnavailable):
    """A conditional write (S3's ``If-None-Match: *`` or ``If-Match``) lost: the key exists
    already, or changed since it was read; another writer got there first."""

    def __init__(self) -> None:
        super().__init__("the record changed meanwhile, try again", retry_after=1)


class QueueUnavailable(ServiceUnavailable):
    """The deployment queue could not be reached or is throttling."""


class BudgetExhausted(ServiceUnavailable):
    """No part buffer was free in time (``sources.max_buffer_bytes``)."""

    def __init__(self, waited: float) -> None:
        super().__init__(
            f"no upload buffer free for {waited:g} seconds (sources.max_buffer_bytes); "
            "try again later"
        )
