"""The OpenAPI description of sources: create one, upload the archive, download it (the
resumable uploads on the same URL are in ``openapi_resumable``)."""

from __future__ import annotations

from gateway.config import Config
from gateway.error_codes import Code
from gateway.server.http.body import MAX_JSON_BODY
from gateway.server.http.openapi_common import (
    REQUEST_ID_HEADER,
    RETRY_AFTER,
    SOURCE_ID_PARAM,
    SOURCE_ID_PATTERN,
    STRING,
    Schema,
    auth_errors,
    common_errors,
    error,
    json_response,
    rate_limited,
    ref,
    token_error,
    token_param,
)

_BINARY: Schema = {"schema": {"type": "string", "format": "binary"}}


def _source_object() -> Schema:
    return {
        "type": "object",
        "required": ["upload_url", "download_url", "id", "expires_at"],
        "properties": {
            "upload_url": {"type": "string", "format": "uri"},
            "download_url": {"type": "string", "format": "uri"},
            "id": {"type": "string", "pattern": SOURCE_ID_PATTERN},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    }


def source_schemas() -> Schema:
    return {
        "Source": {
            **_source_object(),
            "description": "The source's URLs, at the top level (as the public API reference "
            "shows) and under `source` (as the platform's current API and Go client read them).",
            "required": ["upload_url", "download_url", "id", "expires_at", "source"],
            "properties": {**_source_object()["properties"], "source": _source_object()},
        },
        "Upload": {
            "type": "object",
            "required": ["id", "size", "sha256"],
            "properties": {
                "id": {"type": "string", "pattern": SOURCE_ID_PATTERN},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "archive": ref("ArchiveFacts"),
            },
        },
        "ArchiveFacts": _archive_facts(),
        "ArchiveInvalid": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string", "description": "The reason, naming the entry."},
                "code": {"const": Code.ARCHIVE_INVALID},
            },
        },
    }


def _archive_facts() -> Schema:
    return {
        "type": "object",
        "description": "What the archive check found (absent with `archive_check: off`).",
        "required": ["entries", "files", "inflated_size", "root"],
        "properties": {
            "entries": {"type": "integer", "minimum": 0},
            "files": {"type": "integer", "minimum": 0, "description": "Regular files."},
            "inflated_size": {
                "type": "integer",
                "minimum": 0,
                "description": "Bytes of the tar stream once gunzipped.",
            },
            "root": {
                "type": ["string", "null"],
                "description": "The one top-level directory every entry sits in, with a "
                "trailing `/` (`app-1.2/`); null when entries sit at the top level.",
            },
            "problem": {
                "type": "string",
                "description": "`archive_check: report` only: why `enforce` would have "
                "refused the archive (the counts stop there).",
            },
        },
    }


def source_operations(config: Config) -> Schema:
    """``POST /v1/sources``, the upload and the download, by operationId."""
    return {
        "createSource": {
            "summary": "Create a source: two pre-authenticated URLs",
            "tags": ["sources"],
            "requestBody": {
                "required": False,
                "description": "Empty, or a JSON object (ignored).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "201": json_response(ref("Source"), "Created.", REQUEST_ID_HEADER),
                "400": error("Malformed JSON, or not an object", Code.INVALID_JSON),
                **auth_errors(),
                "413": error(f"Body over {MAX_JSON_BODY // 1024} KiB."),
                "415": error("A non-empty body that is not JSON", Code.UNSUPPORTED_MEDIA_TYPE),
                **common_errors(),
            },
        },
        "uploadSource": _upload_operation(config.sources.max_size_bytes),
        "getSource": _download_operation("get"),
        "headSource": _download_operation("head"),
    }


def _upload_operation(max_size: int) -> Schema:
    return {
        "summary": "Upload the archive (streamed into the bucket)",
        "tags": ["sources"],
        "description": f"At most {max_size} bytes. The token is checked before any body "
        "byte is read (`Expect: 100-continue` is honoured). Without a `Content-Type`, or "
        "with `application/octet-stream` or `application/x-www-form-urlencoded` (curl's "
        "`--data-binary` default), the archive is stored as `application/gzip`.",
        "parameters": [
            SOURCE_ID_PARAM,
            token_param("upload"),
            {
                "name": "Content-MD5",
                "in": "header",
                "description": "Base64 MD5 of the body; a mismatch stores nothing.",
                "schema": STRING,
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/gzip": _BINARY, "application/octet-stream": _BINARY},
        },
        "responses": _upload_responses(max_size),
    }


def _upload_responses(max_size: int) -> Schema:
    return {
        "200": json_response(
            ref("Upload"),
            "Stored. `ETag` is the object's.",
            {"ETag": {"schema": STRING}, **REQUEST_ID_HEADER},
        ),
        "400": error(
            "Bad `Content-MD5`, mismatch, a body cut short, or a `Content-Type` that"
            " is not a media type in printable ASCII",
            Code.BAD_DIGEST,
            Code.INCOMPLETE_BODY,
            Code.INVALID_CONTENT_TYPE,
        ),
        "201": {
            "description": "The IETF draft with `Upload-Complete: ?0` (or with "
            "`send_104`): a resumable upload, its URL in `Location`."
        },
        "403": token_error("Bad, tampered, wrong-purpose or expired."),
        "409": error(
            "The draft: too many unfinished uploads of this source", Code.TOO_MANY_UPLOADS
        ),
        "413": error(f"Larger than {max_size} bytes; nothing is stored."),
        **rate_limited("Past the uploads in flight the source's creator may have"),
        "417": error("An `Expect` other than `100-continue`."),
        "501": error("The draft, when resumable uploads are unavailable."),
        "422": json_response(
            ref("ArchiveInvalid"),
            "The archive check (`archive_check: enforce`) refused the body: not "
            "gzip, corrupt or cut short, not tar, too large inflated, too many "
            "entries, an unsafe entry, or a check over its CPU time "
            "(`archive_check_cpu_seconds`). Nothing is stored; an earlier upload "
            f"stays. Sent as soon as found, the connection then closed "
            f"(`code: {Code.ARCHIVE_INVALID}`).",
        ),
        "408": error(
            "The body sent nothing for `server.body_timeout` seconds, or came slower"
            " than `server.min_upload_rate`; nothing is stored."
        ),
        **common_errors(),
        "503": error(
            "The object store is unreachable or failing, or no part buffer was free"
            " within `server.body_timeout` seconds (`sources.max_buffer_bytes`).",
            headers=RETRY_AFTER,
        ),
    }


def _download_headers() -> Schema:
    def header(description: str) -> Schema:
        return {"description": description, "schema": STRING}

    return {
        "Content-Length": header("Size of the body (of the range for 206)."),
        "ETag": header("The object's ETag."),
        "Last-Modified": header("When the object was uploaded."),
        "Accept-Ranges": header("Always `bytes`."),
        "X-Checksum-Sha256": header("SHA-256 of the whole object, hex."),
        "Repr-Digest": header("RFC 9530: `sha-256=:<base64>:`."),
        "Content-Disposition": header('Always `attachment; filename="<id>.tar.gz"`.'),
        "X-Content-Type-Options": header(
            "Always `nosniff`: a browser never renders an archive from the gateway's origin."
        ),
        "X-Archive-Entries": header("Entries in the archive (when it was checked)."),
        "X-Archive-Files": header("Regular files in the archive (when it was checked)."),
        "X-Archive-Inflated-Size": header("Bytes of the tar stream once gunzipped."),
        "X-Archive-Root": header("The archive's single top-level directory, percent-encoded."),
        "X-Archive-Problem": header("`report` mode: why `enforce` would have refused it."),
        **REQUEST_ID_HEADER,
    }


def _download_operation(method: str) -> Schema:
    body = {} if method == "head" else {"content": {"*/*": {"schema": STRING}}}
    return {
        "summary": "Download the archive" if method == "get" else "Describe the archive",
        "tags": ["sources"],
        "parameters": [
            SOURCE_ID_PARAM,
            token_param("download"),
            {
                "name": "Range",
                "in": "header",
                "description": "One range: `bytes=a-b`, `bytes=a-` or `bytes=-n` gives 206; "
                "anything else is ignored (200).",
                "schema": {"type": "string", "pattern": "^bytes=[0-9]{0,9}-[0-9]{0,9}$"},
                "example": "bytes=0-1023",
            },
            {
                "name": "If-None-Match",
                "in": "header",
                "description": "An ETag (or `*`): 304 when it is the object's.",
                "schema": STRING,
            },
            {"name": "If-Range", "in": "header", "schema": STRING},
        ],
        "responses": {
            "200": {"description": "The whole object.", "headers": _download_headers(), **body},
            "206": {
                "description": "The requested range, with `Content-Range`.",
                "headers": _download_headers(),
                **body,
            },
            "304": {"description": "`If-None-Match` matched the current ETag."},
            "307": {"description": "`download_mode: redirect`: a presigned S3 URL in `Location`."},
            "403": token_error("Bad, tampered, wrong-purpose or expired token."),
            "416": error("The range starts past the end (`Content-Range: bytes */size`)."),
            **common_errors(),
        },
    }
