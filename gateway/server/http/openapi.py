"""The OpenAPI 3.1 description of the gateway, served at ``GET /v1/openapi.json``.

Built in code rather than kept as a file so that it carries this instance's ``public_url`` and
limits, and so that ``create_app`` reads no file. ``tests/test_openapi.py`` keeps it true: it
validates the document, checks that every route of the application is in it, and fuzzes every
operation with schemathesis against the documented response schemas.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.config import Config
from gateway.ids import SOURCE_ID_REGEX
from gateway.server.domain.deployments.records import MAX_EVENT_ID, MAX_HOOK_LENGTH
from gateway.server.http.openapi_platform import platform_paths, platform_schemas
from gateway.server.http.openapi_resumable import source_operations, upload_path
from gateway.statuses import STATUSES

OPENAPI_PATH = "/v1/openapi.json"
# The source id in paths: a lowercase UUID4 as the gateway issues them (anything else is 404).
SOURCE_ID_PATTERN = f"^{SOURCE_ID_REGEX}$"
DEPLOYMENT_STATUSES = list(STATUSES)

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, headers: Schema | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: Schema | None = None) -> Schema:
    return _json(_ref("Error"), description, headers)


_REQUEST_ID_HEADER: Schema = {
    "X-Request-ID": {
        "description": "The request's id, also in its access log line.",
        "schema": {"type": "string"},
    }
}
_RETRY_AFTER: Schema = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
_WWW_AUTHENTICATE: Schema = {
    "WWW-Authenticate": {"description": "Always `Bearer`.", "schema": {"type": "string"}}
}


def _common_errors() -> Schema:
    """Responses any operation may give: an unknown route or method, storage trouble.

    No ``default`` response: every status the gateway can answer is listed, so the fuzz test's
    status-code check means something."""
    return {
        "404": _json(_ref("NotFound"), "Not found (`resource` says what: `source` or `route`)."),
        "405": _error("Method not allowed."),
        "417": _error("An `Expect` header other than `100-continue`."),
        "502": _error("The object store (or deployer) answered with an error."),
        "503": _error("The object store is unreachable or failing.", _RETRY_AFTER),
    }


_RATE_LIMIT_HEADERS: Schema = {
    **_RETRY_AFTER,
    "RateLimit-Policy": {
        "description": "The limit (IETF draft-ietf-httpapi-ratelimit-headers): "
        '`"api";q=<burst>;w=<seconds>` or `"uploads";q=<n>;qu="concurrent-requests"`.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left: `"api";r=0;t=<seconds until the next request>`.',
        "schema": {"type": "string"},
    },
}


def _rate_limited(what: str) -> Schema:
    return {"429": _error(f"{what} (`code: rate_limited`; auth.limits).", _RATE_LIMIT_HEADERS)}


def _auth_errors() -> Schema:
    return {
        "401": _error(
            "Missing or unknown API token, or an identity-provider JWT that is not valid.",
            _WWW_AUTHENTICATE,
        ),
        **_rate_limited("Past the token's request rate"),
    }


def _token_param(purpose: str) -> Schema:
    return {
        "name": "token",
        "in": "query",
        "required": True,
        "description": f"The {purpose} token of the source URL (signed, timed, bound to the id).",
        "schema": {"type": "string"},
    }


_SOURCE_ID_PARAM: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": SOURCE_ID_PATTERN},
}


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


def _schemas() -> Schema:
    return {
        "Error": {
            "type": "object",
            "description": "401, 405, 409, 413, 5xx: `error` only; 400 and 403 add `code`.",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
        },
        "TokenError": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string"},
                "code": {"type": "string", "enum": ["token_invalid", "token_expired"]},
            },
        },
        "NotFound": {
            "type": "object",
            "required": ["resource", "error"],
            "properties": {"resource": {"type": "string"}, "error": {"const": "not found"}},
        },
        "ValidationErrors": {
            "type": "object",
            "required": ["errors"],
            "properties": {
                "errors": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "string"},
                    },
                }
            },
        },
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
                "archive": _ref("ArchiveFacts"),
            },
        },
        "ArchiveFacts": {
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
        },
        "ArchiveInvalid": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": {"type": "string", "description": "The reason, naming the entry."},
                "code": {"const": "archive_invalid"},
            },
        },
        "DeploymentRequest": {
            "type": "object",
            "required": ["deployment"],
            "properties": {
                "deployment": {
                    "type": "object",
                    "description": "`download_url` and `source_url` are two names of the same "
                    "field (both present and different: 422); one of them is required.",
                    "properties": {
                        "git_ref": {
                            "type": "string",
                            "maxLength": 255,
                            "description": "Printable, not starting with `-` (an image tag).",
                        },
                        "download_url": {"type": "string", "format": "uri", "maxLength": 2048},
                        "source_url": {"type": "string", "format": "uri", "maxLength": 2048},
                        "postdeploy_hook": {
                            "type": "string",
                            "maxLength": MAX_HOOK_LENGTH,
                            "description": "A command run after the deployment (printable).",
                        },
                    },
                }
            },
        },
        "Deployment": {
            "type": "object",
            "description": "The platform's deployment object, as the gateway records it.",
            "required": ["deployment"],
            "properties": {"deployment": _ref("DeploymentObject")},
        },
        **_deployment_schemas(),
        "Status": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "error": {"type": "string"},
                "checks": {
                    "type": "object",
                    "description": "/readyz: each dependency's latest background check.",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["status", "required"],
                        "properties": {
                            "status": {"enum": ["ok", "unavailable", "unknown"]},
                            "required": {"type": "boolean"},
                            "age_seconds": {"type": "number"},
                            "error": {"type": "string"},
                        },
                    },
                },
            },
        },
    }


def _deployment_schemas() -> Schema:
    """The deployment object, the list, and the events a deployer posts."""
    return {
        "DeploymentObject": {
            "type": "object",
            "required": ["id", "app_id", "created_at", "finished_at", "status", "links"],
            "properties": {
                "id": {"type": "string"},
                "app_id": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "finished_at": {
                    "type": ["string", "null"],
                    "description": "Set when the status becomes final.",
                },
                "status": {"type": "string", "enum": DEPLOYMENT_STATUSES},
                "git_ref": {"type": ["string", "null"]},
                "type": {"const": "archive"},
                "source_url": {"type": "string"},
                "postdeploy_hook": {"type": ["string", "null"]},
                "pusher": {
                    "type": "object",
                    "description": "The API token that created it: its name as `id`, "
                    "`username` and `name`, its configured `email`.",
                    "properties": {
                        "id": {"type": "string"},
                        "username": {"type": "string"},
                        "email": {"type": "string"},
                        "name": {"type": "string"},
                    },
                },
                "duration": {
                    "type": ["integer", "null"],
                    "description": "Seconds from creation to the final status; null until then.",
                },
                "links": {
                    "type": "object",
                    "properties": {"output": {"type": "string", "format": "uri"}},
                },
            },
        },
        "Deployments": {
            "type": "object",
            "required": ["deployments", "meta"],
            "properties": {
                "deployments": {"type": "array", "items": _ref("DeploymentObject")},
                "meta": {
                    "type": "object",
                    "properties": {
                        "pagination": {
                            "type": "object",
                            "properties": {
                                "current_page": {"type": "integer"},
                                "prev_page": {"type": ["integer", "null"]},
                                "next_page": {"type": ["integer", "null"]},
                                "total_pages": {"type": "integer"},
                                "total_count": {"type": "integer"},
                            },
                        }
                    },
                },
            },
        },
        "DeploymentEvent": {
            "type": "object",
            "description": "One event, numbered by the deployer from 1. `status` events carry "
            "`status`, `log` events `content` (one or more lines, at most 64 KiB).",
            "required": ["id", "type"],
            "properties": {
                "id": {"type": "integer", "minimum": 1, "maximum": MAX_EVENT_ID},
                "type": {"type": "string", "enum": ["status", "log"]},
                "status": {"type": "string", "enum": DEPLOYMENT_STATUSES},
                "content": {"type": "string"},
            },
        },
        "EventAccepted": {
            "type": "object",
            "required": ["id"],
            "properties": {"id": {"type": "integer"}},
        },
    }


_APP_PARAM: Schema = {
    "name": "app",
    "in": "path",
    "required": True,
    "description": "Lowercase letters, digits and dashes, 3 to 48 characters.",
    "schema": {"type": "string"},
}
_DEPLOYMENT_ID_PARAM: Schema = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The deployment's id (a UUID); anything else is 404.",
    "schema": {"type": "string"},
}


def _reading(summary: str, operation_id: str, ok: Schema, extra: Schema | None = None) -> Schema:
    """A read of one app's deployments with an API token."""
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["deployments"],
        "parameters": [_APP_PARAM, _DEPLOYMENT_ID_PARAM, *(extra or {}).get("parameters", [])],
        "responses": {
            "200": ok,
            **_auth_errors(),
            "403": _error("The token may not deploy this app (`code: forbidden`)."),
            **_common_errors(),
        },
    }


def _deployment_paths() -> Schema:
    text = {"type": "string"}
    events = _reading(
        "Follow a deployment live (server-sent events)",
        "followDeployment",
        {
            "description": "`text/event-stream`: every event so far, then new ones as they are "
            "stored, each as `id: N` (its place in the order the gateway took the events), "
            "`event: status|log`, `data: {json}`; a `:` comment every 15 s; the stream ends "
            "after the final status, and is cut short (the connection closed) on an error. "
            "`curl -N` follows it.",
            "content": {"text/event-stream": {"schema": text}},
        },
        {
            "parameters": [
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "Resume after this place in the stream (an `id:`).",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,10}$"},
                }
            ]
        },
    )
    report = {
        "summary": "Report a status or output (the deployer, with the job's events_url)",
        "operationId": "postDeploymentEvent",
        "tags": ["deployments"],
        "security": [],
        "parameters": [
            _APP_PARAM,
            _DEPLOYMENT_ID_PARAM,
            {
                "name": "token",
                "in": "query",
                "required": True,
                "description": "The events token of the job's events_url (bound to the "
                "app and the deployment).",
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("DeploymentEvent")}},
        },
        "responses": {
            "200": _json(_ref("EventAccepted"), "Stored (or a retry of a stored event)."),
            "400": _error("Malformed JSON."),
            "403": _json(_ref("TokenError"), "Bad, tampered, another deployment's or expired."),
            "409": _error("A different event with this id, or an event after the final status."),
            "413": _error(
                "Body too large, or the deployment holds 9,999 events and this is not a final "
                "status (`too_many_events`)."
            ),
            "415": _error("Not `application/json`."),
            "422": _json(_ref("ValidationErrors"), "Unknown type or status, bad id or content."),
            **_common_errors(),
        },
    }
    return {
        "/v1/apps/{app}/deployments/{id}": {
            "get": _reading(
                "One deployment, with its current status",
                "getDeployment",
                _json(_ref("Deployment"), "The deployment."),
            )
        },
        "/v1/apps/{app}/deployments/{id}/output": {
            "get": _reading(
                "The deployment's output so far",
                "getDeploymentOutput",
                {
                    "description": "The output lines; past the limit, one last line says the "
                    "output was cut.",
                    "content": {"text/plain": {"schema": text}},
                },
            )
        },
        "/v1/apps/{app}/deployments/{id}/events": {"get": events, "post": report},
    }


def _list_deployments() -> Schema:
    listing = _reading("List an app's deployments, newest first", "listDeployments", {})
    listing["parameters"] = [
        _APP_PARAM,
        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        {
            "name": "per_page",
            "in": "query",
            "description": "At most 100 (more is read as 100); 30 by default.",
            "schema": {"type": "integer", "minimum": 1},
        },
    ]
    listing["responses"]["200"] = _json(_ref("Deployments"), "One page.")
    listing["responses"]["400"] = _error("`page` or `per_page` is not a positive integer.")
    return listing


def _download_headers() -> Schema:
    def header(description: str) -> Schema:
        return {"description": description, "schema": {"type": "string"}}

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
        **_REQUEST_ID_HEADER,
    }


def _download_operation(method: str) -> Schema:
    body = {} if method == "head" else {"content": {"*/*": {"schema": {"type": "string"}}}}
    return {
        "summary": "Download the archive" if method == "get" else "Describe the archive",
        "operationId": f"{method}Source",
        "tags": ["sources"],
        "security": [],
        "parameters": [
            _SOURCE_ID_PARAM,
            _token_param("download"),
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
                "schema": {"type": "string"},
            },
            {"name": "If-Range", "in": "header", "schema": {"type": "string"}},
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
            "403": _json(_ref("TokenError"), "Bad, tampered, wrong-purpose or expired token."),
            "416": _error("The range starts past the end (`Content-Range: bytes */size`)."),
            **_common_errors(),
        },
    }


def _probe(summary: str, ok: str, schema: Schema, extra: Schema | None = None) -> Schema:
    return {
        "summary": summary,
        "tags": ["operations"],
        "security": [],
        "responses": {"200": _json(schema, ok), **(extra or {}), **_common_errors()},
    }


def _with_head(get: Schema, operation_id: str) -> Schema:
    """``GET`` and the ``HEAD`` aiohttp adds beside it: same answers, no body."""
    head_responses = {
        status: {k: v for k, v in response.items() if k != "content"}
        for status, response in get["responses"].items()
    }
    return {
        "get": {**get, "operationId": operation_id},
        "head": {**get, "operationId": f"{operation_id}Head", "responses": head_responses},
    }


def document(config: Config) -> Schema:
    """The OpenAPI 3.1 document for a gateway running ``config``."""
    max_size = config.sources.max_size_bytes
    paths: Schema = {
        "/v1/sources": {
            "post": {
                "summary": "Create a source: two pre-authenticated URLs",
                "operationId": "createSource",
                "tags": ["sources"],
                "requestBody": {
                    "required": False,
                    "description": "Empty, or a JSON object (ignored).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "201": _json(_ref("Source"), "Created.", _REQUEST_ID_HEADER),
                    "400": _error("Malformed JSON, or not an object (`code: invalid_json`)."),
                    **_auth_errors(),
                    "413": _error("Body over 64 KiB."),
                    "415": _error("A non-empty body that is not JSON."),
                    **_common_errors(),
                },
            }
        },
        "/v1/sources/{id}": {
            "put": {
                "summary": "Upload the archive (streamed into the bucket)",
                "operationId": "uploadSource",
                "tags": ["sources"],
                "security": [],
                "description": f"At most {max_size} bytes. The token is checked before any body "
                "byte is read (`Expect: 100-continue` is honoured). Without a `Content-Type`, or "
                "with `application/octet-stream`, the archive is stored as `application/gzip`.",
                "parameters": [
                    _SOURCE_ID_PARAM,
                    _token_param("upload"),
                    {
                        "name": "Content-MD5",
                        "in": "header",
                        "description": "Base64 MD5 of the body; a mismatch stores nothing.",
                        "schema": {"type": "string"},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        },
                    },
                },
                "responses": {
                    "200": _json(
                        _ref("Upload"),
                        "Stored. `ETag` is the object's.",
                        {"ETag": {"schema": {"type": "string"}}, **_REQUEST_ID_HEADER},
                    ),
                    "400": _error(
                        "Bad `Content-MD5`, mismatch, a body cut short, or a `Content-Type` that"
                        " is not a media type in printable ASCII (`code: invalid_content_type`)."
                    ),
                    "201": {
                        "description": "The IETF draft with `Upload-Complete: ?0` (or with "
                        "`send_104`): a resumable upload, its URL in `Location`."
                    },
                    "403": _json(_ref("TokenError"), "Bad, tampered, wrong-purpose or expired."),
                    "409": _error("The draft: too many unfinished uploads of this source."),
                    "413": _error(f"Larger than {max_size} bytes; nothing is stored."),
                    **_rate_limited("Past the uploads in flight the source's creator may have"),
                    "417": _error("An `Expect` other than `100-continue`."),
                    "501": _error("The draft, when resumable uploads are unavailable."),
                    "422": _json(
                        _ref("ArchiveInvalid"),
                        "The archive check (`archive_check: enforce`) refused the body: not "
                        "gzip, corrupt or cut short, not tar, too large inflated, too many "
                        "entries, an unsafe entry, or a check over its CPU time "
                        "(`archive_check_cpu_seconds`). Nothing is stored; an earlier upload "
                        "stays. Sent as soon as found, the connection then closed.",
                    ),
                    "408": _error(
                        "The body sent nothing for `server.body_timeout` seconds, or came slower"
                        " than `server.min_upload_rate`; nothing is stored."
                    ),
                    **_common_errors(),
                    "503": _error(
                        "The object store is unreachable or failing, or no part buffer was free"
                        " within `server.body_timeout` seconds (`sources.max_buffer_bytes`).",
                        _RETRY_AFTER,
                    ),
                },
            },
            "get": _download_operation("get"),
            "head": _download_operation("head"),
        },
        "/v1/apps/{app}/deployments": {
            "post": {
                "summary": "Deploy an app from an archive URL",
                "operationId": "createDeployment",
                "tags": ["deployments"],
                "parameters": [
                    {
                        "name": "app",
                        "in": "path",
                        "required": True,
                        "description": "Lowercase letters, digits and dashes, 3 to 48"
                        " characters, starting with a letter and not ending with a dash.",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("DeploymentRequest")}},
                },
                "responses": {
                    "201": _json(_ref("Deployment"), "Recorded and forwarded to the deployer."),
                    "400": _error("Malformed JSON."),
                    **_auth_errors(),
                    "403": _error("The token may not deploy this app (`code: forbidden`)."),
                    "413": _error("Body too large."),
                    "415": _error("Not `application/json`."),
                    "422": _json(_ref("ValidationErrors"), "Every bad field, named."),
                    **_common_errors(),
                },
            },
            "get": _list_deployments(),
        },
        **_deployment_paths(),
        "/healthz": _with_head(
            _probe("Liveness: 200 while the process serves", "Serving.", _ref("Status")),
            "healthz",
        ),
        "/readyz": _with_head(
            _probe(
                "Readiness: the required dependencies answered their latest background check",
                "Ready.",
                _ref("Status"),
                {"503": _json(_ref("Status"), "Not ready: `error` says why.", _RETRY_AFTER)},
            ),
            "readyz",
        ),
        "/metrics": _with_head(
            {
                "summary": "Prometheus metrics (text format)",
                "tags": ["operations"],
                "security": [{"metricsToken": []}] if config.metrics.token else [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_auth_errors(),
                    **_common_errors(),
                },
            },
            "metrics",
        ),
        OPENAPI_PATH: _with_head(
            _probe("This document", "OpenAPI 3.1.", {"type": "object"}), "openapi"
        ),
        **platform_paths(
            _common_errors(),
            _auth_errors(),
            _error("The token may not deploy this app (`code: forbidden`)."),
        ),
    }
    source_params = [_SOURCE_ID_PARAM, _token_param("upload")]
    paths["/v1/sources/{id}"].update(source_operations(source_params))
    paths["/v1/sources/{id}/uploads/{uid}"] = upload_path(_SOURCE_ID_PARAM)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sources-gateway",
            "version": "1",
            "description": "Pre-authenticated upload and download URLs for code archives, "
            "streamed into S3, and deployments from an archive URL. Source URLs carry their "
            "own token; the API takes `Authorization: Bearer <token>` or HTTP Basic with the "
            "token as password.",
        },
        "servers": [{"url": config.server.base_url}],
        "security": [{"bearer": []}, {"basic": []}],
        "tags": [
            {"name": "sources", "description": "Create, upload and download archives."},
            {
                "name": "deployments",
                "description": "Deploy from an archive URL, and follow what becomes of it.",
            },
            {"name": "operations", "description": "Probes, metrics and this document."},
            {
                "name": "platform",
                "description": "What the platform's own CLI and JavaScript client call: the "
                "token exchange, the user, the regions, the app and its deployments stream.",
            },
        ],
        "paths": paths,
        "components": {
            "schemas": {**_schemas(), **platform_schemas()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any user name (`curl -u :$TOKEN`), the token as password.",
                },
                "metricsToken": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def openapi_handler(config: Config) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /v1/openapi.json``: the document, serialized once."""
    body = json.dumps(document(config), indent=1).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi
