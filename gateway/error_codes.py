"""Every machine-readable error code the gateway answers, in one table: its HTTP status, the keys of
its JSON body and what it means.

The server's errors (``gateway.errors``) raise only these codes, its OpenAPI document lists them,
and the client's messages read them; the client may not import the server, so the table lives
here and imports nothing (as ``gateway.ids`` does for the id and name rules).
``tests/test_error_codes.py`` fails when a code is raised, rendered or documented that the table
lacks. Errors without a code (401, 404, 405, 408, 409 ``Conflict``, 413, 416, 417, 422
``ValidationFailed``, 5xx) have their shapes in ``gateway.errors``' tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Code(StrEnum):
    """The ``code`` of an error body (a ``str``: it is what JSON carries)."""

    BAD_REQUEST = "bad_request"
    INVALID_JSON = "invalid_json"
    INVALID_HEADER = "invalid_header"
    INVALID_CONTENT_TYPE = "invalid_content_type"
    BAD_DIGEST = "bad_digest"
    INCOMPLETE_BODY = "incomplete_body"
    DIGEST_MISMATCH = "digest_mismatch"
    UNSUPPORTED_CHECKSUM = "unsupported_checksum"
    UNSUPPORTED_INTEROP_VERSION = "unsupported_interop_version"
    INCONSISTENT_UPLOAD_LENGTH = "inconsistent_upload_length"
    FORBIDDEN = "forbidden"
    TOKEN_INVALID = "token_invalid"
    TOKEN_EXPIRED = "token_expired"
    MISMATCHING_UPLOAD_OFFSET = "mismatching_upload_offset"
    UPLOAD_SUPERSEDED = "upload_superseded"
    TOO_MANY_UPLOADS = "too_many_uploads"
    TOO_MANY_EVENTS = "too_many_events"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    ARCHIVE_INVALID = "archive_invalid"
    RATE_LIMITED = "rate_limited"
    CHECKSUM_MISMATCH = "checksum_mismatch"


# The body's keys: the platform's ``{"error", "code"}``, and the IETF resumable-upload draft's
# problem details (RFC 9457) on top of it.
ERROR_AND_CODE = ("error", "code")
PROBLEM = (*ERROR_AND_CODE, "type", "title")


@dataclass(frozen=True)
class Entry:
    status: int
    keys: tuple[str, ...]
    meaning: str


CODES: dict[Code, Entry] = {
    Code.BAD_REQUEST: Entry(400, ERROR_AND_CODE, "a malformed request (or query parameter)"),
    Code.INVALID_JSON: Entry(400, ERROR_AND_CODE, "the body is not a JSON object"),
    Code.INVALID_HEADER: Entry(400, ERROR_AND_CODE, "a resumable-upload header is malformed"),
    Code.INVALID_CONTENT_TYPE: Entry(
        400, ERROR_AND_CODE, "the Content-Type is not a media type in printable ASCII"
    ),
    Code.BAD_DIGEST: Entry(400, ERROR_AND_CODE, "Content-MD5 is malformed or not the body's"),
    Code.INCOMPLETE_BODY: Entry(400, ERROR_AND_CODE, "the body ended before Content-Length"),
    Code.DIGEST_MISMATCH: Entry(400, ERROR_AND_CODE, "Content-Digest or Repr-Digest mismatch"),
    Code.UNSUPPORTED_CHECKSUM: Entry(
        400, ERROR_AND_CODE, "tus: an Upload-Checksum algorithm the gateway does not take"
    ),
    Code.UNSUPPORTED_INTEROP_VERSION: Entry(
        400, ERROR_AND_CODE, "the IETF draft: an interop version the gateway does not speak"
    ),
    Code.INCONSISTENT_UPLOAD_LENGTH: Entry(
        400, PROBLEM, "the IETF draft: lengths that contradict the upload's"
    ),
    Code.FORBIDDEN: Entry(403, ERROR_AND_CODE, "the token may not do this (deploy this app)"),
    Code.TOKEN_INVALID: Entry(
        403, ERROR_AND_CODE, "a source or events URL's token is damaged, foreign or for another use"
    ),
    Code.TOKEN_EXPIRED: Entry(403, ERROR_AND_CODE, "a source or events URL's token has expired"),
    Code.MISMATCHING_UPLOAD_OFFSET: Entry(
        409,
        (*PROBLEM, "expected-offset", "provided-offset"),
        "an append that does not start at the upload's offset",
    ),
    Code.UPLOAD_SUPERSEDED: Entry(409, ERROR_AND_CODE, "a newer request took the upload over"),
    Code.TOO_MANY_UPLOADS: Entry(
        409, ERROR_AND_CODE, "the source has sources.max_open_per_source unfinished uploads"
    ),
    Code.TOO_MANY_EVENTS: Entry(
        413, ERROR_AND_CODE, "the deployment holds its most events; only a final status is taken"
    ),
    Code.UNSUPPORTED_MEDIA_TYPE: Entry(415, ERROR_AND_CODE, "the body's media type is refused"),
    Code.ARCHIVE_INVALID: Entry(
        422, ERROR_AND_CODE, "the archive check refused the upload (the reason names the entry)"
    ),
    Code.RATE_LIMITED: Entry(429, ERROR_AND_CODE, "past a limit of auth.limits"),
    Code.CHECKSUM_MISMATCH: Entry(
        460, ERROR_AND_CODE, "tus: Upload-Checksum does not match the chunk (discarded)"
    ),
}


def codes_of(status: int) -> list[Code]:
    """The codes answered with ``status``, in the table's order."""
    return [code for code, entry in CODES.items() if entry.status == status]
