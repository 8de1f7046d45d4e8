"""The OpenAPI description of resumable uploads (tus 1.0, the IETF draft): the operations they add
on the source URL and the upload resource, merged into ``openapi.document``."""

from __future__ import annotations

from gateway.error_codes import Code, codes_of
from gateway.paths import UPLOAD_ID_REGEX
from gateway.server.http.openapi_common import (
    SOURCE_ID_PARAM,
    Schema,
    token_param,
    with_codes,
)

UPLOAD_ID_PATTERN = f"^{UPLOAD_ID_REGEX}$"


def _response(description: str, json_body: bool = True, *codes: Code) -> Schema:
    description = with_codes(description, codes)
    if not json_body:
        return {"description": description}
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def _header(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_PROTOCOL_HEADERS = [
    _header("Tus-Resumable", "tus: `1.0.0` on every request but OPTIONS."),
    _header("Upload-Draft-Interop-Version", "The IETF draft interop version."),
    _header("Upload-Complete", "The draft: `?1` when this request ends the upload, else `?0`."),
    _header("Upload-Length", "The upload's total length, when known."),
]
_BAD_HEADERS = (
    Code.INVALID_HEADER,
    Code.INCONSISTENT_UPLOAD_LENGTH,
    Code.DIGEST_MISMATCH,
    Code.UNSUPPORTED_CHECKSUM,
    Code.UNSUPPORTED_INTEROP_VERSION,
)
_ERRORS: Schema = {
    "400": _response(
        "A malformed header, or lengths that contradict each other",
        True,
        *_BAD_HEADERS,
    ),
    "403": _response(
        "A bad, expired or foreign token", True, Code.TOKEN_INVALID, Code.TOKEN_EXPIRED
    ),
    "404": _response("Unknown, cancelled or expired upload (or route)."),
    "405": _response("Method not allowed."),
    "408": _response("The body stopped arriving."),
    "409": _response(
        "Wrong offset, a newer request took the upload over, or too many uploads",
        True,
        *codes_of(409),
    ),
    "412": _response("tus: no `Tus-Resumable: 1.0.0`."),
    "413": _response("Past the size limit."),
    "415": _response("The body's media type is not the protocol's", True, *codes_of(415)),
    "417": _response("An `Expect` header other than `100-continue`."),
    "422": _response(
        "The archive check refused the upload (nothing visible)", True, *codes_of(422)
    ),
    "429": _response(
        "An append past `auth.limits.concurrent_uploads` (counted with plain uploads of sources"
        " the same identity created); `Retry-After`",
        True,
        *codes_of(429),
    ),
    "460": _response(
        "tus: `Upload-Checksum` does not match; the chunk is discarded", True, *codes_of(460)
    ),
    "501": _response("Resumable uploads are off, or the store ignores conditional writes."),
    "502": _response("The object store answered with an error."),
    "503": _response(
        "The object store is unreachable or failing, or no part buffer came free in time"
        " (`sources.max_buffer_bytes`)."
    ),
}


_UPLOAD_PARAMS = [
    {
        "name": "uid",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": UPLOAD_ID_PATTERN},
    },
    {
        "name": "token",
        "in": "query",
        "required": True,
        "schema": {"type": "string"},
        "description": "The upload's resume token (from its `Location`).",
    },
]


def _operation(summary: str, ok: Schema, params: list[Schema]) -> Schema:
    return {
        "summary": summary,
        "tags": ["sources"],
        "parameters": [*params, *_PROTOCOL_HEADERS],
        "responses": {**ok, **_ERRORS},
    }


def _discovery(params: list[Schema]) -> Schema:
    return {
        "summary": "Discovery: tus versions, extensions, limits; the draft's Upload-Limit",
        "tags": ["sources"],
        "parameters": params,
        "responses": {
            "204": _response("What the server speaks.", json_body=False),
            **{status: _ERRORS[status] for status in ("403", "404", "405", "417")},
        },
    }


def resumable_operations() -> Schema:
    """``POST`` and ``OPTIONS`` on the ``upload_url``; the upload resource (offset, append,
    cancel, discovery); by operationId."""
    source_params = [SOURCE_ID_PARAM, token_param("upload")]
    created = {
        "200": _response("The draft with `Upload-Complete: ?1`: the upload's usual answer."),
        "201": _response("Created: `Location` is the upload's absolute URL.", json_body=False),
    }
    params = [SOURCE_ID_PARAM, *_UPLOAD_PARAMS]
    offset = {"200": _response("tus: the offset.", False), "204": _response("The offset.", False)}
    appended = {
        "200": _response("The draft: the upload completed, its usual answer."),
        "204": _response("Appended: the new `Upload-Offset`.", json_body=False),
    }
    head = _operation("The upload's offset", offset, params)
    return {
        "createResumableUpload": _operation(
            "Create a resumable upload (tus `POST`, or the draft)", created, source_params
        ),
        "discoverResumableUploads": _discovery(source_params),
        "getUploadOffset": head,
        "getUploadOffsetByGet": {**head, "summary": "The offset (draft 9 on)"},
        "appendToUpload": _operation("Append at the offset", appended, params),
        "cancelUpload": _operation(
            "Cancel the upload", {"204": _response("Cancelled.", json_body=False)}, params
        ),
        "discoverUpload": _discovery(params),
    }
